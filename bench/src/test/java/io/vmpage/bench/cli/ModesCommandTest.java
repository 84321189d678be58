package io.vmpage.bench.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.vmpage.bench.Main;
import java.io.PrintWriter;
import java.io.StringWriter;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

class ModesCommandTest {
    private final StringWriter out = new StringWriter();
    private final StringWriter err = new StringWriter();

    private int run(String... args) {
        CommandLine cl = Cli.newCommandLine(new Main());
        cl.setOut(new PrintWriter(out));
        cl.setErr(new PrintWriter(err));
        return cl.execute(args);
    }

    @Test
    void jsonReportsEveryModeThatRanWithItsCounters() throws Exception {
        assertEquals(0, run("modes", "--workload", "churn", "--ops", "2000", "--memory", "32m", "--json"), err.toString());
        JsonNode root = new ObjectMapper().readTree(out.toString());
        assertEquals("churn", root.get("workload").asText());
        assertTrue(root.get("modes").size() >= 1);
        JsonNode nested = root.get("modes").get(0);
        assertEquals("nested", nested.get("paging").asText());
        assertTrue(nested.get("ops_per_sec").asLong() > 0);
        assertTrue(nested.get("exits").get("ept_violation").asLong() > 0, "memory populated through EPT violations");
        double hitRate = nested.get("tlb_hit_rate").asDouble();
        assertTrue(hitRate > 0 && hitRate < 1, "hit rate " + hitRate);
        assertTrue(nested.get("walk_refs_per_miss").asDouble() > 0);
        for (JsonNode m : root.get("modes")) {
            assertTrue(m.get("paging").asText().matches("nested|shadow|pv"));
        }
    }

    @Test
    void humanReportSaysWhetherTheModesAgreed() {
        assertEquals(0, run("modes", "--ops", "1000", "--memory", "32m"), err.toString());
        assertTrue(out.toString().contains("workload mixed"), out.toString());
        assertTrue(out.toString().contains("nested"), out.toString());
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
}
