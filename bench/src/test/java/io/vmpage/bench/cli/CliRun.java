package io.vmpage.bench.cli;

import io.vmpage.bench.Main;
import java.io.PrintWriter;
import java.io.StringWriter;
import picocli.CommandLine;

/** Runs the {@code vmpage} command line in-process, capturing what it prints. */
final class CliRun {
    final StringWriter out = new StringWriter();
    final StringWriter err = new StringWriter();

    /** Executes {@code vmpage args...}; returns the exit code. */
    int exec(String... args) {
        CommandLine cl = Cli.newCommandLine(new Main());
        cl.setOut(new PrintWriter(out, true));
        cl.setErr(new PrintWriter(err, true));
        return cl.execute(args);
    }
}
