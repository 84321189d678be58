package io.vmpage.bench.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.awt.image.BufferedImage;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class MigrateCommandTest {
    private final CliRun cli = new CliRun();
    private final StringWriter out = cli.out;
    private final StringWriter err = cli.err;

    @ParameterizedTest
    @CsvSource({"nested, precopy, hotset, write-protect", "nested, precopy, zipf, dirty-bits", "shadow, precopy, uniform, dirty-ring",
        "nested, stopcopy, sequential, write-protect",
        "shadow, postcopy, uniform, write-protect", "shadow, hybrid, hotset, dirty-ring", "nested, hybrid, uniform, write-protect",
        "pv, precopy, uniform, write-protect", "pv, stopcopy, hotset, dirty-ring"})
    void aMigrationUnderWritersIsVerifiedAndReportedAsJson(String paging, String mode, String pattern, String method) throws Exception {
        assertEquals(0, cli.exec("migrate", "--memory", "64m", "--paging", paging, "--mode", mode, "--pattern", pattern,
            "--method", method, "--wws", "4m", "--dirty-rate", "8m", "--bandwidth", "256m", "--json"), err.toString());
        JsonNode root = new ObjectMapper().readTree(out.toString());
        assertEquals(mode, root.get("mode").asText());
        assertEquals(paging, root.get("paging").asText());
        assertEquals(64L << 20, root.get("memory_bytes").asLong());
        assertEquals(2, root.get("writers").asInt());
        assertTrue(root.get("verified").asBoolean(), root.toString());
        assertEquals(0, root.get("mismatched_pages").asLong());
        assertTrue(root.get("pages_sent").asLong() > (32L << 20) / 4096, "the populated heap at least: " + root);
        assertTrue(root.get("downtime_ms").asDouble() > 0);
        assertEquals(root.get("rounds").asInt(), root.get("per_round").size());
        assertTrue(root.has("stop_reason") && root.has("predicted_converge") && root.has("dirty_rate_bytes_per_s")
            && root.has("bandwidth_bytes_per_s") && root.has("zero_pages") && root.has("throttle_percent"), root.toString());
        assertTrue(err.toString().contains("round 0"), "progress lines go to stderr with --json: " + err);
    }

    @ParameterizedTest
    @CsvSource({"precopy", "postcopy"})
    void aMigrationOverTcpOnLoopbackIsVerified(String mode) throws Exception {
        assertEquals(0, cli.exec("migrate", "--memory", "64m", "--mode", mode, "--transport", "tcp", "--wws", "4m",
            "--dirty-rate", "8m", "--bandwidth", "256m", "--json"), err.toString());
        JsonNode root = new ObjectMapper().readTree(out.toString());
        assertEquals("tcp", root.get("transport").asText());
        assertTrue(root.get("verified").asBoolean(), root.toString());
        assertEquals(0, root.get("mismatched_pages").asLong());
        assertTrue(err.toString().contains("destination: vmpage host, process"), "a child process was the destination: " + err);
        if (mode.equals("postcopy")) { // the destination's vCPUs run from the switch-over and fault pages in over the return path
            assertTrue(root.get("postcopy_faults").asLong() > 0, root.toString());
        }
    }

    /** {@code vmpage host} listening, and {@code vmpage migrate --to} it: nothing but the socket between them. */
    @ParameterizedTest
    @CsvSource({"precopy", "hybrid"})
    void aMigrationToAHostListeningOnAPortIsVerifiedAndTheVmRunsThere(String mode) throws Exception {
        HostRun host = HostRun.start("--memory-limit", "256m", "--wait", "60s", "--json");
        CliRun hostCli = host.cli;
        int port = host.port();
        assertEquals(0, cli.exec("migrate", "--memory", "64m", "--mode", mode, "--to", "127.0.0.1:" + port, "--wws", "4m",
            "--dirty-rate", "8m", "--bandwidth", "256m", "--json"), err.toString());
        int hostExit = host.join(60_000);
        JsonNode root = new ObjectMapper().readTree(out.toString());
        assertEquals("tcp", root.get("transport").asText());
        assertEquals("127.0.0.1:" + port, root.get("to").asText());
        assertTrue(root.get("verified").asBoolean(), root.toString());
        assertTrue(root.get("missing_writes").isNull(), "the journal stays in the source process: " + root);
        assertEquals(0, hostExit, hostCli.err.toString());
        JsonNode there = new ObjectMapper().readTree(hostCli.out.toString());
        assertTrue(there.get("ran").asBoolean(), there.toString());
        assertTrue(there.get("writes_after_resume").asLong() > 0, there.toString());
        // every page of the heap (the 64m guest less the kernel's 32 MiB), found by touching it, was written
        assertEquals((64 - 32) << 8, there.get("pages_written_after_resume").asLong(), there.toString());
        assertEquals(64L << 20, there.get("memory_bytes").asLong());
        assertEquals(mode.equals("hybrid"), there.has("postcopy_faults"), there.toString());
        assertTrue(there.get("guest_kernel_free_frames").asInt() > 0, "the guest kernel came as device state: " + there);
    }

    /**
     * Post-copy recovery from the command line: a proxy between {@code vmpage migrate --to} and
     * {@code vmpage host} cuts the first connection 2 MiB into the source's stream, after the switch-over.
     * The host runs the VM on what it has and waits; the source reconnects by itself, sends the rest and
     * verifies every page; both exit 0.
     */
    @Test
    void aPostCopyWhoseConnectionIsCutReconnectsByItselfAndIsVerified() throws Exception {
        HostRun host = HostRun.start("--memory-limit", "256m", "--wait", "60s", "--json");
        CliRun hostCli = host.cli;
        int port = host.port();
        try (CuttingProxy proxy = new CuttingProxy(port, 2L << 20)) {
            assertEquals(0, cli.exec("migrate", "--memory", "64m", "--mode", "postcopy", "--to", "127.0.0.1:" + proxy.port(),
                "--wws", "4m", "--dirty-rate", "8m", "--bandwidth", "32m", "--json"), err.toString());
            assertEquals(2, proxy.connections(), "one cut, one that recovered");
        }
        int hostExit = host.join(60_000);
        JsonNode root = new ObjectMapper().readTree(out.toString());
        assertTrue(root.get("verified").asBoolean(), root.toString());
        assertEquals(0, root.get("mismatched_pages").asLong());
        assertTrue(err.toString().contains("post-copy paused") && err.toString().contains("post-copy recovered"), err.toString());
        assertEquals(0, hostExit, hostCli.err.toString());
        assertTrue(hostCli.err.toString().contains("post-copy recovered"), hostCli.err.toString());
        assertTrue(new ObjectMapper().readTree(hostCli.out.toString()).get("ran").asBoolean());
    }

    /**
     * A TCP proxy to {@code target} on loopback: the first connection is cut (both sides closed) once
     * {@code cutAfter} bytes went from the client to the target; later ones are passed on whole.
     */
    private static final class CuttingProxy implements AutoCloseable {
        private final java.net.ServerSocket server = new java.net.ServerSocket(0, 4, java.net.InetAddress.getLoopbackAddress());
        private final java.util.concurrent.atomic.AtomicInteger connections = new java.util.concurrent.atomic.AtomicInteger();
        private final Thread acceptor;

        CuttingProxy(int target, long cutAfter) throws java.io.IOException {
            acceptor = new Thread(() -> {
                try {
                    while (true) {
                        java.net.Socket client = server.accept();
                        java.net.Socket upstream = new java.net.Socket(java.net.InetAddress.getLoopbackAddress(), target);
                        long limit = connections.incrementAndGet() == 1 ? cutAfter : Long.MAX_VALUE;
                        pump(client, upstream, limit);
                        pump(upstream, client, Long.MAX_VALUE);
                    }
                } catch (java.io.IOException closed) {
                    // the proxy was closed
                }
            }, "cutting-proxy");
            acceptor.setDaemon(true);
            acceptor.start();
        }

        private static void pump(java.net.Socket from, java.net.Socket to, long limit) {
            Thread t = new Thread(() -> {
                byte[] buffer = new byte[64 << 10];
                long passed = 0;
                try (from; to) {
                    java.io.InputStream in = from.getInputStream();
                    java.io.OutputStream out = to.getOutputStream();
                    for (int n = in.read(buffer); n >= 0 && passed < limit; n = in.read(buffer)) {
                        int part = (int) Math.min(n, limit - passed);
                        out.write(buffer, 0, part);
                        passed += part;
                    }
                } catch (java.io.IOException e) {
                    // one side went: both are closed
                }
            }, "cutting-proxy-pump");
            t.setDaemon(true);
            t.start();
        }

        int port() {
            return server.getLocalPort();
        }

        int connections() {
            return connections.get();
        }

        @Override
        public void close() throws java.io.IOException {
            server.close();
        }
    }

    @Test
    void migratingToAPortWhereNothingListensIsRefusedNamingIt() throws Exception {
        int port;
        try (java.net.ServerSocket s = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            port = s.getLocalPort();
        }
        assertEquals(2, cli.exec("migrate", "--memory", "64m", "--to", "127.0.0.1:" + port));
        assertTrue(err.toString().contains("--to 127.0.0.1:" + port) && err.toString().contains("cannot connect"), err.toString());
    }

    @Test
    void xbzrleSendsReSentPagesAsDeltasAndSaysSo() throws Exception {
        assertEquals(0, cli.exec("migrate", "--memory", "64m", "--wws", "4m", "--dirty-rate", "8m", "--bandwidth", "64m", "--downtime-limit", "1ms", "--max-rounds", "5",
            "--xbzrle", "--xbzrle-cache", "8m", "--json"), err.toString());
        JsonNode root = new ObjectMapper().readTree(out.toString());
        assertTrue(root.get("verified").asBoolean(), root.toString());
        JsonNode x = root.get("xbzrle");
        assertEquals(8L << 20, x.get("cache_bytes").asLong());
        assertTrue(x.get("pages").asLong() > 0 && x.get("encoding_rate").asDouble() > 1, root.toString());
        assertTrue(x.has("cache_misses") && x.has("overflows") && x.has("unchanged_pages"), root.toString());
    }

    @Test
    void theHumanReportShowsEachRoundAndTheVerdict() {
        assertEquals(0, cli.exec("migrate", "--memory", "64m", "--wws", "4m", "--bandwidth", "128m"), err.toString());
        String report = out.toString();
        assertTrue(report.contains("round 0: sent"), report);
        assertTrue(report.contains("stop-and-copy, paused"), report);
        assertTrue(report.contains("verified: true"), report);
        assertTrue(report.contains("predicted to converge"), report);
        java.util.regex.Matcher kernel = java.util.regex.Pattern.compile("guest kernel state moved as device state: (\\d+) free guest"
            + " frames at the source, (\\d+) on the destination").matcher(report);
        assertTrue(kernel.find(), report);
        assertEquals(kernel.group(1), kernel.group(2), "the destination's kernel is the source's");
    }

    @ParameterizedTest
    @CsvSource({"precopy", "stopcopy", "postcopy", "hybrid"})
    void plotWritesAPngOfTheRounds(String mode, @TempDir Path dir) throws Exception {
        Path png = dir.resolve("rounds.PNG"); // the extension in any case, the name kept as typed
        assertEquals(0, cli.exec("migrate", "--memory", "64m", "--mode", mode, "--wws", "4m", "--dirty-rate", "8m",
            "--bandwidth", "256m", "--plot", png.toString()), err.toString());
        BufferedImage image = ImageIO.read(png.toFile());
        assertNotNull(image, "not a PNG ImageIO can read: " + png);
        assertEquals(MigrationPlot.WIDTH, image.getWidth());
        assertEquals(MigrationPlot.HEIGHT, image.getHeight());
        assertTrue(pixels(image, MigrationPlot.PAUSED) > 1000, "a bar for the round sent with the source paused");
        assertEquals(mode.equals("precopy") || mode.equals("hybrid"), pixels(image, MigrationPlot.RUNNING) > 1000, "bars for the rounds sent while it ran");
        assertTrue(out.toString().contains("plot: " + png), out.toString());
        assertTrue(out.toString().contains("verified: true"), out.toString());
    }

    private static int pixels(BufferedImage image, java.awt.Color color) {
        int n = 0;
        for (int y = 0; y < image.getHeight(); y++) {
            for (int x = 0; x < image.getWidth(); x++) {
                n += (image.getRGB(x, y) & 0xFFFFFF) == (color.getRGB() & 0xFFFFFF) ? 1 : 0;
            }
        }
        return n;
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
        "x.txt|must be a file name ending in .png",
        "plot.png.txt|must be a file name ending in .png",
        "/nonexistent-dir/p.png|directory /nonexistent-dir does not exist"})
    void aBadPlotFileIsOneLineNamingItAndRefusedBeforeTheMigrationRuns(String value, String expected) {
        assertEquals(2, cli.exec("migrate", "--plot", value));
        String message = err.toString().strip();
        assertTrue(message.startsWith("vmpage: --plot " + value) && message.contains(expected) && !message.contains("\n"), message);
        assertEquals("", out.toString(), "nothing ran");
    }

    @Test
    void aPlotFileThatIsADirectoryIsRefusedBeforeTheMigrationRuns(@TempDir Path dir) throws Exception {
        Path png = Files.createDirectory(dir.resolve("d.png"));
        assertEquals(2, cli.exec("migrate", "--plot", png.toString()));
        String message = err.toString().strip();
        assertEquals("vmpage: --plot " + png + " is a directory; it must be a file name ending in .png", message);
        assertEquals("", out.toString(), "nothing ran");
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
        "--memory|1k|--memory",
        "--memory|99g|--memory",
        "--paging|bogus|--paging bogus",
        "--mode|sideways|--mode sideways",
        "--pattern|spiral|--pattern spiral",
        "--bandwidth|fast|--bandwidth fast",
        "--dirty-rate|-1m|--dirty-rate",
        "--downtime-limit|300|--downtime-limit 300",
        "--writers|0|--writers 0",
        "--max-rounds|0|--max-rounds 0",
        "--transport|udp|--transport udp",
        "--wws|1g|--wws",
        "--xbzrle-cache|2g|--xbzrle-cache 2g",
        "--channels|0|--channels 0",
        "--heap|1k|--heap 1k",
        "--heap|1g|--heap 1g",
        "--channels|17|--channels 17",
        "--channels|two|--channels",
        "--to|nohost|--to nohost",
        "--to|127.0.0.1:0|--to 127.0.0.1:0",
        "--to|127.0.0.1:http|--to 127.0.0.1:http",
        "--to|no.such.host.invalid:4444|unknown host"})
    void badFlagsAreOneLineNamingTheValueAndExitTwo(String option, String value, String named) {
        assertEquals(2, cli.exec("migrate", option, value));
        String message = err.toString().strip();
        assertTrue(message.startsWith("vmpage: ") && message.contains(named) && !message.contains("\n"), message);
    }

    @ParameterizedTest
    @CsvSource({"postcopy", "hybrid"})
    void aParavirtualGuestIsRefusedPostCopyNamingWhy(String mode) {
        assertEquals(2, cli.exec("migrate", "--paging", "pv", "--mode", mode));
        assertTrue(err.toString().contains("--paging pv --mode " + mode) && err.toString().contains("Xen"), err.toString());
    }

    /** Multifd: --channels alone is two, --channels N is N, over memory and to a child process. */
    @ParameterizedTest
    @CsvSource({"precopy, memory, ''", "hybrid, memory, 4", "stopcopy, tcp, 3"})
    void channelsCarryThePagesAndTheJsonSaysHowMany(String mode, String transport, String channels) throws Exception {
        java.util.List<String> args = new java.util.ArrayList<>(java.util.List.of("migrate", "--memory", "64m", "--mode", mode,
            "--transport", transport, "--wws", "4m", "--dirty-rate", "8m", "--bandwidth", "128m", "--json"));
        args.addAll(channels.isEmpty() ? java.util.List.of("--channels") : java.util.List.of("--channels", channels));
        assertEquals(0, cli.exec(args.toArray(String[]::new)), err.toString());
        JsonNode root = new ObjectMapper().readTree(out.toString());
        assertEquals(channels.isEmpty() ? 2 : Integer.parseInt(channels), root.get("channels").asInt());
        assertTrue(root.get("verified").asBoolean(), root.toString());
    }

    @Test
    void channelsWithXbzrleOrPostCopyAreRefusedAndTheDefaultIsOneStream() throws Exception {
        assertEquals(2, cli.exec("migrate", "--xbzrle", "--channels"));
        assertTrue(err.toString().contains("--channels 2") && err.toString().contains("--xbzrle"), err.toString());
        assertEquals(2, cli.exec("migrate", "--mode", "postcopy", "--channels", "3"));
        assertTrue(err.toString().contains("--channels 3") && err.toString().contains("hybrid"), err.toString());
        assertEquals(0, cli.exec("migrate", "--memory", "64m", "--wws", "4m", "--json"), err.toString());
        assertEquals(1, new ObjectMapper().readTree(out.toString()).get("channels").asInt());
    }

    /** --heap writes only that much of the guest: the rest is never populated and never sent. */
    @Test
    void aGuestWrittenOnlyInPartSendsOnlyThatPart() throws Exception {
        assertEquals(0, cli.exec("migrate", "--memory", "512m", "--heap", "16m", "--mode", "stopcopy", "--bandwidth", "unlimited",
            "--json"), err.toString());
        JsonNode root = new ObjectMapper().readTree(out.toString());
        assertTrue(root.get("verified").asBoolean(), root.toString());
        assertEquals(512L << 20, root.get("memory_bytes").asLong());
        long sent = root.get("pages_sent").asLong();
        assertTrue(sent >= 4096 && sent < 4096 + (32 << 20) / 4096, "the 16 MiB heap and at most the kernel's 32 MiB, not 512 MiB: "
            + sent + " pages");
    }

    @Test
    void xbzrleWithAModeThatSendsEachPageOnceIsRefused() {
        assertEquals(2, cli.exec("migrate", "--mode", "postcopy", "--xbzrle"));
        assertTrue(err.toString().contains("--xbzrle") && err.toString().contains("--mode postcopy"), err.toString());
    }
}
