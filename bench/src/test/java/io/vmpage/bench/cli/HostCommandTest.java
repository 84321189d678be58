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

    /** A peer that sends garbage instead of a migration stream: the host says so and exits 1, keeping nothing. */
    @Test
    void aStreamThatIsNotAMigrationIsRejectedClearly() throws Exception {
        int[] exit = {-1};
        Thread host = new Thread(() -> exit[0] = cli.exec("host", "--listen", "127.0.0.1:0", "--memory-limit", "128m",
            "--wait", "30s", "--stall-timeout", "2s"));
        host.start();
        int port = -1;
        for (long until = System.nanoTime() + 30_000_000_000L; port < 0 && System.nanoTime() < until; Thread.sleep(10)) {
            java.util.regex.Matcher m = java.util.regex.Pattern.compile("listening on 127\\.0\\.0\\.1:(\\d+)").matcher(cli.err.toString());
            port = m.find() ? Integer.parseInt(m.group(1)) : -1;
        }
        try (Socket peer = new Socket("127.0.0.1", port)) {
            DataOutputStream out = new DataOutputStream(peer.getOutputStream());
            out.writeInt(64);
            out.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n0123456789012345678901234567890123".getBytes());
            out.writeInt(-1);
            out.flush();
            host.join(30_000);
        }
        assertEquals(1, exit[0], cli.err.toString());
        assertTrue(cli.err.toString().contains("not a vmpage migration stream"), cli.err.toString());
    }
}
