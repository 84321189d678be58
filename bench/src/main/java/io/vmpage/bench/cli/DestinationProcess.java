package io.vmpage.bench.cli;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.lang.management.ManagementFactory;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * {@code vmpage host} started as a child process of {@code vmpage migrate --transport tcp}, on a loopback
 * port the system picks: the same JVM (binary, flags, class path) runs {@code host --listen 127.0.0.1:0},
 * its first stderr line names the port, and everything it prints is kept for the parent's report.
 * {@link #close} stops it if it is still running.
 */
final class DestinationProcess implements AutoCloseable {
    private static final String LISTENING = "listening on ";
    private static final long START_MILLIS = 60_000;

    private final Process process;
    private final InetSocketAddress address;
    /** Filled by the two output pumps. */
    private final StringBuffer output;
    private final Thread stdout;
    private final Thread stderr;

    private DestinationProcess(Process process, InetSocketAddress address, StringBuffer output, Thread stdout, Thread stderr) {
        this.process = process;
        this.address = address;
        this.output = output;
        this.stdout = stdout;
        this.stderr = stderr;
    }

    /** Starts {@code vmpage host} with a host of {@code hostBytes} and waits for it to listen. */
    static DestinationProcess start(long hostBytes, long runMillis) {
        List<String> command = new ArrayList<>();
        command.add(ProcessHandle.current().info().command().orElse("java"));
        for (String arg : ManagementFactory.getRuntimeMXBean().getInputArguments()) {
            if (!arg.startsWith("-agentlib:jdwp") && !arg.startsWith("-javaagent")) { // no second debugger or coverage agent
                command.add(arg);
            }
        }
        command.add("-cp");
        command.add(System.getProperty("java.class.path"));
        command.add("io.vmpage.bench.Main");
        command.add("host");
        command.add("--listen");
        command.add("127.0.0.1:0");
        command.add("--memory-limit");
        command.add(Long.toString(hostBytes));
        command.add("--run");
        command.add(runMillis + "ms");
        Process process;
        try {
            process = new ProcessBuilder(command).start();
        } catch (IOException e) {
            throw new Cli.UsageException("--transport tcp: cannot start the destination process: " + e.getMessage());
        }
        StringBuffer output = new StringBuffer();
        java.util.concurrent.CompletableFuture<String> port = new java.util.concurrent.CompletableFuture<>();
        Thread stderr = pump(process.getErrorStream(), output, port);
        Thread stdout = pump(process.getInputStream(), output, null);
        try {
            String at = port.get(START_MILLIS, TimeUnit.MILLISECONDS);
            int colon = at.lastIndexOf(':');
            InetSocketAddress address = new InetSocketAddress(at.substring(0, colon), Integer.parseInt(at.substring(colon + 1)));
            return new DestinationProcess(process, address, output, stdout, stderr);
        } catch (Exception e) {
            process.destroyForcibly();
            throw new IllegalStateException("the destination process did not start listening within " + START_MILLIS + " ms: "
                + output.toString().strip(), e);
        }
    }

    /** Copies {@code in} line by line into {@code output}; completes {@code port} with the first listening line. */
    private static Thread pump(java.io.InputStream in, StringBuffer output,
                               java.util.concurrent.CompletableFuture<String> port) {
        Thread t = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
                for (String line = r.readLine(); line != null; line = r.readLine()) {
                    if (port != null && !port.isDone() && line.startsWith(LISTENING)) {
                        port.complete(line.substring(LISTENING.length()).strip());
                        continue;
                    }
                    output.append(line).append(System.lineSeparator());
                }
            } catch (IOException ignored) {
                // the process went away: what it printed so far is kept
            } finally {
                if (port != null) {
                    port.completeExceptionally(new IOException("its output ended"));
                }
            }
        }, "destination-output");
        t.setDaemon(true);
        t.start();
        return t;
    }

    InetSocketAddress address() {
        return address;
    }

    long pid() {
        return process.pid();
    }

    /** Waits at most {@code millis} for the process to end; its exit code, or -1 if it had to be stopped. */
    int await(long millis) throws InterruptedException {
        if (!process.waitFor(millis, TimeUnit.MILLISECONDS)) {
            process.destroyForcibly();
            process.waitFor(10, TimeUnit.SECONDS);
            return -1;
        }
        stdout.join(5_000);
        stderr.join(5_000);
        return process.exitValue();
    }

    /** What the process printed, stdout and stderr interleaved by line. */
    String output() {
        return output.toString();
    }

    @Override
    public void close() {
        if (process.isAlive()) {
            process.destroyForcibly();
        }
    }
}
