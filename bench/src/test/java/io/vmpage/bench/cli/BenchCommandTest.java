package io.vmpage.bench.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.bench.Main;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/** The bench command's listing and pattern handling; no benchmark is run here (too slow for a unit test). */
class BenchCommandTest {
    private final StringWriter out = new StringWriter();
    private final StringWriter err = new StringWriter();

    private int vmpage(String... args) {
        CommandLine cl = Cli.newCommandLine(new Main());
        cl.setOut(new PrintWriter(out, true));
        cl.setErr(new PrintWriter(err, true));
        return cl.execute(args);
    }

    @Test
    void listShowsTheWholeSuite() {
        assertEquals(Cli.OK, vmpage("bench", "--list"));
        List<String> names = out.toString().lines().toList();
        assertTrue(names.contains("io.vmpage.bench.jmh.MachineMemoryBench.read"), out.toString());
        assertTrue(names.contains("io.vmpage.bench.jmh.MachineMemoryBench.rawRead"), out.toString());
        assertTrue(names.contains("io.vmpage.bench.jmh.FrameBench.copyFrame"), out.toString());
        assertEquals("", err.toString());
    }

    @Test
    void listWithPatternShowsOnlyMatches() {
        assertEquals(Cli.OK, vmpage("bench", "--list", "FrameBench\\.raw"));
        assertEquals(List.of("io.vmpage.bench.jmh.FrameBench.rawCopy", "io.vmpage.bench.jmh.FrameBench.rawSum"),
            out.toString().lines().toList());
    }

    @Test
    void mainRunListsWithExitZero() {
        assertEquals(Cli.OK, Main.run("bench", "--list", "MachineMemoryBench"));
    }

    @Test
    void unmatchedPatternIsAOneLineUsageError() {
        assertEquals(Cli.USAGE, vmpage("bench", "--list", "FrameBench", "NoSuchBench"));
        assertEquals(1, err.toString().lines().count(), err.toString());
        assertTrue(err.toString().contains("no benchmark matches 'NoSuchBench'"), err.toString());
        assertEquals("", out.toString());
    }

    @Test
    void unmatchedPatternFailsBeforeRunning() {
        assertEquals(Cli.USAGE, vmpage("bench", "--quick", "NoSuchBench"));
        assertTrue(err.toString().startsWith("vmpage: no benchmark matches"), err.toString());
    }

    @Test
    void invalidRegexIsAUsageError() {
        assertEquals(Cli.USAGE, vmpage("bench", "--list", "Frame("));
        assertTrue(err.toString().contains("not a valid regex"), err.toString());
    }

    @Test
    void commitFallsBackToNogitOutsideARepository(@TempDir Path dir) {
        assertEquals("nogit", BenchCommand.shortCommit(dir));
    }

    @Test
    void rootDefaultsToTheCurrentDirectory() {
        String saved = System.getProperty("vmpage.root");
        try {
            System.clearProperty("vmpage.root");
            assertEquals(Path.of("").toAbsolutePath().normalize(), BenchCommand.root());
            System.setProperty("vmpage.root", "/tmp/x/../y");
            assertEquals(Path.of("/tmp/y"), BenchCommand.root());
        } finally {
            if (saved == null) {
                System.clearProperty("vmpage.root");
            } else {
                System.setProperty("vmpage.root", saved);
            }
        }
        assertFalse(BenchCommand.ALL.isEmpty());
    }
}
