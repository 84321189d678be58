package io.vmpage.bench.cli;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** {@code vmpage host --listen 127.0.0.1:0 ...} run on a thread of its own: the destination a test migrates to. */
final class HostRun {
    private static final Pattern LISTENING = Pattern.compile("listening on 127\\.0\\.0\\.1:(\\d+)");

    /** What the host printed. */
    final CliRun cli = new CliRun();
    private final Thread thread;
    private volatile int exit = -1;

    private HostRun(String... options) {
        String[] args = new String[options.length + 3];
        args[0] = "host";
        args[1] = "--listen";
        args[2] = "127.0.0.1:0";
        System.arraycopy(options, 0, args, 3, options.length);
        thread = new Thread(() -> exit = cli.exec(args), "vmpage-host");
        thread.start();
    }

    /** Starts {@code vmpage host --listen 127.0.0.1:0 options...}. */
    static HostRun start(String... options) {
        return new HostRun(options);
    }

    /** The port it listens on, once it printed it (at most 30 s). */
    int port() throws InterruptedException {
        for (long until = System.nanoTime() + 30_000_000_000L; System.nanoTime() < until; Thread.sleep(10)) {
            Matcher m = LISTENING.matcher(cli.err.toString());
            if (m.find()) {
                return Integer.parseInt(m.group(1));
            }
        }
        assertTrue(false, "the host never printed where it listens: " + cli.err);
        return -1;
    }

    /** Waits for it to end (at most {@code millis}); its exit code, -1 if it did not end. */
    int join(long millis) throws InterruptedException {
        thread.join(millis);
        return exit;
    }
}
