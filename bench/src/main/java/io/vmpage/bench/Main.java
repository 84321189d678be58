package io.vmpage.bench;

import io.vmpage.bench.cli.BenchCommand;
import io.vmpage.bench.cli.Cli;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** Entry point of the {@code vmpage} command line. */
@Command(name = "vmpage",
    mixinStandardHelpOptions = true,
    versionProvider = Cli.Version.class,
    description = "Native-memory paging engine: x86-64 page tables, EPT, TLB, shadow/nested/PV paging.",
    subcommands = {BenchCommand.class, io.vmpage.bench.cli.ModesCommand.class, io.vmpage.bench.cli.DirtyLogCommand.class, io.vmpage.bench.cli.WalkCommand.class, io.vmpage.bench.cli.MigrateCommand.class, io.vmpage.bench.cli.OvercommitCommand.class, io.vmpage.bench.cli.HostCommand.class, CommandLine.HelpCommand.class})
public final class Main implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    public static void main(String[] args) {
        System.exit(run(args));
    }

    /** Runs the CLI and returns its exit code (0 ok, 1 verification failed, 2 bad usage). */
    public static int run(String... args) {
        return Cli.newCommandLine(new Main()).execute(args);
    }

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "missing subcommand (try 'vmpage --help')");
    }
}
