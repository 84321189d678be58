package io.vmpage.bench.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.StringWriter;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class DirtyLogCommandTest {
    private final CliRun cli = new CliRun();
    private final StringWriter out = cli.out;
    private final StringWriter err = cli.err;

    private int run(String... args) {
        return cli.exec(args);
    }

    @ParameterizedTest
    @CsvSource({"nested, write-protect", "nested, dirty-bits", "nested, dirty-ring", "shadow, write-protect",
        "shadow, dirty-ring", "pv, write-protect", "pv, dirty-ring"})
    void everyIterationReportsEveryPageAndTheCopyConverges(String paging, String method) throws Exception {
        assertEquals(0, run("dirty-log", "--paging", paging, "--method", method, "--vcpus", "2", "--memory", "512k",
            "--iterations", "3", "--ring-size", "64", "--json"), err.toString());
        JsonNode root = new ObjectMapper().readTree(out.toString());
        assertEquals(paging, root.get("paging").asText());
        assertEquals(method, root.get("method").asText());
        assertEquals(3, root.get("iterations").size());
        assertTrue(root.get("all_reported").asBoolean());
        assertTrue(root.get("converged").asBoolean());
        for (JsonNode it : root.get("iterations")) {
            assertEquals(0, it.get("pages_missing").asLong());
            assertTrue(it.get("pages_reported").asLong() >= 256, it.toString()); // 2 vCPUs x 128 pages
            long exits = it.get("dirty_log_exits").asLong();
            if (method.equals("dirty-bits")) {
                assertEquals(0, exits, "dirty bits never exit on a write");
            } else {
                assertTrue(exits >= 256, "a write-protect exit per page: " + it);
            }
            if (method.equals("dirty-ring")) {
                assertTrue(it.get("ring_full_exits").asLong() > 0, "128 pages per vCPU overflow a 64-entry ring: " + it);
            }
        }
    }

    @Test
    void humanReportNamesThePhasesAndTheVerdict() {
        assertEquals(0, run("dirty-log", "--vcpus", "1", "--memory", "256k", "--iterations", "2"), err.toString());
        String report = out.toString();
        assertTrue(report.contains("populate memory"), report);
        assertTrue(report.contains("enable logging"), report);
        assertTrue(report.contains("every page written was reported by its iteration's harvest: yes"), report);
        assertTrue(report.contains("the copy built from the harvests equals guest memory: yes"), report);
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
        "--paging|shadow|--method|dirty-bits|needs --paging nested",
        "--paging|ept|--method|write-protect|--paging ept",
        "--method|pml|--vcpus|1|--method pml",
        "--vcpus|0|--iterations|1|--vcpus 0",
        "--memory|5000|--vcpus|1|--memory 5000",
        "--memory|8000000t|--vcpus|1|--memory 8000000t is out of range: expected a size from 4k to 1g",
        "--memory|2g|--vcpus|1|--memory 2g is out of range: expected a size from 4k to 1g",
        "--memory|-1g|--vcpus|1|--memory -1g is negative",
        "--memory|99999999999999999999k|--vcpus|1|--memory 99999999999999999999k is too large",
        "--vcpus|17|--memory|4k|--vcpus 17 must be between 1 and 16",
        "--vcpus|99999999999|--memory|4k|'99999999999' is not an int",
        "--iterations|-1|--vcpus|1|--iterations -1 must be between 1 and 1000",
        "--iterations|99999999999|--vcpus|1|'99999999999' is not an int",
        "--ring-size|100|--vcpus|1|--ring-size 100"})
    void badUsageIsOneLineAndExitTwo(String a, String b, String c, String d, String expected) {
        assertEquals(2, run("dirty-log", a, b, c, d));
        String message = err.toString().strip();
        assertTrue(message.contains(expected), message);
        assertEquals(1, message.lines().count(), message);
    }

    @Test
    void theLargestDocumentedConfigurationIsRefusedUpFrontWhenTheHostCannotHoldIt() {
        long needed = DirtyLogCommand.footprint(16, 1L << 30);
        long available = HostRam.available();
        Assumptions.assumeTrue(available >= 0 && needed > available,
            "this host has room for 16 vCPUs x 1g (" + available + " bytes available)");
        assertEquals(2, run("dirty-log", "--vcpus", "16", "--memory", "1g"));
        String message = err.toString().strip();
        assertEquals(1, message.lines().count(), message);
        assertTrue(message.startsWith("vmpage: --vcpus 16 --memory 1g needs about 32.5 GiB of host RAM"), message);
        assertTrue(message.contains("available"), message);
    }

    @Test
    void theFootprintIsTheGuestTwiceAndTheTables() {
        long guest = 16 * (1L << 30) + (32L << 20);
        long footprint = DirtyLogCommand.footprint(16, 1L << 30);
        assertTrue(footprint > 2 * guest && footprint < 2 * guest + (512L << 20), Long.toString(footprint));
        assertEquals(guest, DirtyLogCommand.guestBytes(16, 1L << 30), "beyond 2^31: no int anywhere");
    }

    @Test
    void aShortfallNamesTheOptionsAsTypedWhatIsNeededAndWhatIsAvailable() {
        assertNull(HostRam.shortfall("--vcpus 2 --memory 1g", 4L << 30, 8L << 30, "x"));
        assertNull(HostRam.shortfall("--vcpus 2 --memory 1g", 4L << 30, -1, "x"), "nothing known: no refusal");
        assertEquals("--vcpus 16 --memory 1g needs about 32 GiB of host RAM (the guest and its copy) but this host"
            + " has 23.5 GiB available", HostRam.shortfall("--vcpus 16 --memory 1g", 32L << 30, 47L << 29,
            "the guest and its copy"));
    }
}
