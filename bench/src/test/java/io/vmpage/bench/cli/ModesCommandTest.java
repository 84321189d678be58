package io.vmpage.bench.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.StringWriter;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class ModesCommandTest {
    private final CliRun cli = new CliRun();
    private final StringWriter out = cli.out;
    private final StringWriter err = cli.err;

    private int run(String... args) {
        return cli.exec(args);
    }

    @Test
    void jsonReportsEveryModeThatRanWithItsCounters() throws Exception {
        assertEquals(0, run("modes", "--workload", "churn", "--ops", "2000", "--memory", "32m", "--json"), err.toString());
        JsonNode root = new ObjectMapper().readTree(out.toString());
        assertEquals("churn", root.get("workload").asText());
        assertEquals(3, root.get("modes").size(), out.toString());
        JsonNode nested = root.get("modes").get(0);
        JsonNode shadow = root.get("modes").get(1);
        JsonNode pv = root.get("modes").get(2);
        assertEquals("nested", nested.get("paging").asText());
        assertEquals("shadow", shadow.get("paging").asText());
        assertEquals("pv", pv.get("paging").asText());
        for (JsonNode m : root.get("modes")) {
            assertTrue(m.get("ops_per_sec").asLong() > 0);
            double hitRate = m.get("tlb_hit_rate").asDouble();
            assertTrue(hitRate > 0 && hitRate < 1, "hit rate " + hitRate);
            assertTrue(m.get("walk_refs_per_miss").asDouble() > 0);
        }
        // the trade-off: page-table churn exits under shadow paging, not under nested paging
        assertEquals(0, nested.get("exits").get("cr3_load").asLong());
        assertEquals(0, nested.get("exits").get("write_protect").asLong());
        assertTrue(shadow.get("exits").get("cr3_load").asLong() > 0, shadow.toString());
        assertTrue(shadow.get("exits").get("write_protect").asLong() > 0, shadow.toString());
        assertTrue(pv.get("exits").get("hypercall").asLong() > 0, pv.toString());
        assertTrue(nested.get("walk_refs_per_miss").asDouble() > shadow.get("walk_refs_per_miss").asDouble(),
            "a nested TLB miss costs more references than a shadow one");
    }

    @Test
    void humanReportSaysWhetherTheModesAgreed() {
        assertEquals(0, run("modes", "--ops", "1000", "--memory", "32m"), err.toString());
        assertTrue(out.toString().contains("workload mixed"), out.toString());
        assertTrue(out.toString().contains("nested"), out.toString());
        assertTrue(out.toString().contains("every mode observed the same guest: yes"), out.toString());
    }

    @Test
    void badUsageExitsTwoWithOneLine() {
        assertEquals(2, run("modes", "--workload", "bogus"));
        assertTrue(err.toString().contains("bogus") && err.toString().strip().lines().count() == 1, err.toString());
        err.getBuffer().setLength(0);
        assertEquals(2, run("modes", "--memory", "12k"));
        assertTrue(err.toString().contains("--memory"), err.toString());
        assertEquals(2, run("modes", "--ops", "0"));
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
        "--memory|8000000t|--memory 8000000t is out of range: expected a size from 16m to 256g",
        "--memory|1t|--memory 1t is out of range: expected a size from 16m to 256g",
        "--memory|9000000t|--memory 9000000t is too large (more than 2^63-1 bytes); expected a size from 16m to 256g",
        "--memory|99999999999999999999|--memory 99999999999999999999 is too large",
        "--memory|-1g|--memory -1g is negative",
        "--memory|16m1|--memory 16m1 is not a size",
        "--memory|16385k|--memory 16385k must be a whole number of 4 KiB pages",
        "--ops|99999999999|'99999999999' is not an int",
        "--ops|-5|--ops -5 must be positive"})
    void outOfRangeValuesAreNamedAsTyped(String option, String value, String expected) {
        assertEquals(2, run("modes", option, value));
        String message = err.toString().strip();
        assertTrue(message.startsWith("vmpage: ") && message.contains(expected), message);
        assertEquals(1, message.lines().count(), message);
    }

    @Test
    void hostMemoryThatCannotBeMappedIsOneLineAndExitTwo() {
        long host = 2 * (256L << 30) + (64L << 20);
        Assumptions.assumeTrue(HostLimits.refusesMapping(host), "this host would map " + host + " bytes");
        assertEquals(2, run("modes", "--memory", "256g", "--ops", "1000"));
        String message = err.toString().strip();
        assertEquals(1, message.lines().count(), message);
        assertTrue(message.startsWith("vmpage: --memory 256g: cannot map 549822922752 bytes (512.1 GiB) of native memory: "),
            message);
        assertTrue(message.contains("(errno "), message);
        assertFalse(message.contains("Exception"), message);
    }
}
