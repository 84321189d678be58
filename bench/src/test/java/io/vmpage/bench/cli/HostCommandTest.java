package io.vmpage.bench.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.DataOutputStream;
import java.net.Socket;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** {@code vmpage host}: a migration destination in its own process, and what it does with bad input. */
class HostCommandTest {
    private final CliRun cli = new CliRun();

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
        "--listen|70000|--listen 70000",
        "--listen|127.0.0.1:x|--listen 127.0.0.1:x",
        "--memory-limit|1k|--memory-limit",
        "--run|forever|--run forever",
        "--stall-timeout|1ms|--stall-timeout 1ms"})
    void badFlagsAreOneLineNamingTheValueAndExitTwo(String option, String value, String named) {
        String[] args = option.equals("--listen") ? new String[] {"host", option, value}
            : new String[] {"host", "--listen", "127.0.0.1:0", option, value};
        assertEquals(2, cli.exec(args));
        String message = cli.err.toString().strip();
        assertTrue(message.startsWith("vmpage: ") && message.contains(named) && !message.contains("\n"), message);
    }

    @Test
    void noSourceWithinTheWaitIsAFailedMigration() {
        assertEquals(1, cli.exec("host", "--listen", "127.0.0.1:0", "--memory-limit", "128m", "--wait", "200ms"));
        assertTrue(cli.err.toString().contains("no source connected within 200 ms"), cli.err.toString());
    }

    /**
     * Post-copy recovery with {@code vmpage host} as the destination: the source's connection drops in the
     * middle of the push; the host, running the VM on what it has, waits for the source to reconnect, takes
     * the rest over the new connection and replies with hashes the source verifies; its vCPUs then run.
     */
    @Test
    void aHostWaitsForTheSourceToReconnectAfterAPostCopyLostItsConnection() throws Exception {
        HostRun host = HostRun.start("--memory-limit", "256m", "--wait", "30s", "--json");
        CliRun cli = host.cli;
        int port = host.port();
        java.net.InetSocketAddress at = new java.net.InetSocketAddress("127.0.0.1", port);
        try (io.vmpage.engine.Host source = io.vmpage.engine.Host.create(128L << 20)) {
            io.vmpage.migration.Workload guest = new io.vmpage.migration.Workload(source, io.vmpage.engine.PagingMode.NESTED, 2,
                64L << 20, 1024, io.vmpage.migration.Workload.Pattern.UNIFORM, 1024, 0);
            try (guest) {
                guest.start(true, 3);
                guest.awaitWrites(100);
                io.vmpage.migration.MigrationConfig config = io.vmpage.migration.MigrationConfig.defaults()
                    .withMode(io.vmpage.migration.MigrationConfig.Mode.POSTCOPY).withBandwidth(8L << 20);
                io.vmpage.migration.PostCopyPausedException paused;
                try (io.vmpage.migration.TcpTransport link = io.vmpage.migration.TcpTransport.connect(at, 64 << 10, 10_000)) {
                    new Thread(() -> { // the link drops 100 ms into the push of about 4 MiB at 8 MiB/s
                        java.util.concurrent.locks.LockSupport.parkNanos(100_000_000);
                        link.fail("link dropped");
                    }).start();
                    paused = org.junit.jupiter.api.Assertions.assertThrows(io.vmpage.migration.PostCopyPausedException.class,
                        () -> io.vmpage.migration.RemoteMigration.send(guest.vm(), link, config, r -> { }));
                }
                io.vmpage.migration.MigrationReport report;
                try (io.vmpage.migration.TcpTransport again = io.vmpage.migration.TcpTransport.connect(at, 64 << 10, 10_000)) {
                    report = io.vmpage.migration.RemoteMigration.recover(paused, again);
                }
                assertTrue(report.verified(), report.mismatchedPages() + " pages differ");
                guest.vm().retireVcpus();
                guest.stop();
            }
        }
        assertEquals(0, host.join(60_000), cli.err.toString());
        assertTrue(cli.err.toString().contains("post-copy paused") && cli.err.toString().contains("post-copy recovered"),
            cli.err.toString());
        assertTrue(new com.fasterxml.jackson.databind.ObjectMapper().readTree(cli.out.toString()).get("ran").asBoolean());
    }

    /**
     * A VM that is not a {@code vmpage migrate} guest (no guest kernel, nothing mapped where its heap would
     * be) migrates whole, is verified, and then cannot run the host's writers: the host says why and exits 1.
     */
    @Test
    void aVmWithoutTheMigrateGuestsHeapArrivesButItsVcpusSayTheyCannotRun() throws Exception {
        HostRun host = HostRun.start("--memory-limit", "128m", "--wait", "30s", "--json");
        java.net.InetSocketAddress at = new java.net.InetSocketAddress("127.0.0.1", host.port());
        try (io.vmpage.engine.Host source = io.vmpage.engine.Host.create(96L << 20)) {
            io.vmpage.engine.Vm bare = source.createVm(io.vmpage.engine.VmConfig.of(16L << 20));
            bare.writePhysicalLong(0, 42);
            io.vmpage.migration.MigrationReport report;
            try (io.vmpage.migration.TcpTransport link = io.vmpage.migration.TcpTransport.connect(at, 64 << 10, 10_000)) {
                report = io.vmpage.migration.RemoteMigration.send(bare, link,
                    io.vmpage.migration.MigrationConfig.defaults().withMode(io.vmpage.migration.MigrationConfig.Mode.STOPCOPY), r -> { });
            }
            assertTrue(report.verified(), report.mismatchedPages() + " pages differ");
        }
        assertEquals(1, host.join(60_000), host.cli.err.toString());
        com.fasterxml.jackson.databind.JsonNode there = new com.fasterxml.jackson.databind.ObjectMapper().readTree(host.cli.out.toString());
        assertTrue(!there.get("ran").asBoolean() && there.get("failure").asText().contains("not a vmpage migrate guest"), there.toString());
        assertEquals(0, there.get("writes_after_resume").asLong(), there.toString());
    }

    /** A peer that sends garbage instead of a migration stream: the host says so and exits 1, keeping nothing. */
    @Test
    void aStreamThatIsNotAMigrationIsRejectedClearly() throws Exception {
        HostRun host = HostRun.start("--memory-limit", "128m", "--wait", "30s", "--stall-timeout", "2s");
        CliRun cli = host.cli;
        int port = host.port();
        int exit;
        try (Socket peer = new Socket("127.0.0.1", port)) {
            DataOutputStream out = new DataOutputStream(peer.getOutputStream());
            out.writeInt(64);
            out.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n0123456789012345678901234567890123".getBytes());
            out.writeInt(-1);
            out.flush();
            exit = host.join(30_000);
        }
        assertEquals(1, exit, cli.err.toString());
        assertTrue(cli.err.toString().contains("not a vmpage migration stream"), cli.err.toString());
    }
}
