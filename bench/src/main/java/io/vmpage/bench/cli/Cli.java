package io.vmpage.bench.cli;

import io.vmpage.engine.Host;
import io.vmpage.mmu.NativeMemoryException;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintWriter;
import java.util.Properties;
import picocli.CommandLine;

/**
 * CLI conventions every subcommand follows: usage errors are one line on stderr and exit code 2; a
 * verification or invariant failure is exit code 1; sizes, rates and durations parse through {@link Units}.
 * Memory the user asked for that the host cannot supply ({@link NativeMemoryException}) is a usage error
 * too: commands name the option and value that asked for it ({@link #createHost}); the handler below
 * catches any that escapes, so it is never a stack trace.
 */
public final class Cli {
    public static final int OK = 0;
    public static final int VERIFICATION_FAILED = 1;
    public static final int USAGE = 2;

    private Cli() {
    }

    /** A command line with vmpage's converters and error handling installed. */
    public static CommandLine newCommandLine(Object command) {
        CommandLine cl = new CommandLine(command);
        cl.setParameterExceptionHandler((ex, args) -> {
            PrintWriter err = ex.getCommandLine().getErr();
            err.println("vmpage: " + oneLine(ex.getMessage()));
            err.flush();
            return USAGE;
        });
        cl.setExecutionExceptionHandler((ex, commandLine, parseResult) -> {
            if (ex instanceof UsageException || ex instanceof IllegalArgumentException
                || ex instanceof NativeMemoryException) {
                PrintWriter err = commandLine.getErr();
                err.println("vmpage: " + oneLine(ex.getMessage()));
                err.flush();
                return USAGE;
            }
            throw ex;
        });
        return cl;
    }

    private static String oneLine(String message) {
        if (message == null) {
            return "invalid usage";
        }
        int nl = message.indexOf('\n');
        return (nl < 0 ? message : message.substring(0, nl)).strip();
    }

    /**
     * The {@code --json [FILE]} convention: with no {@code --json} ({@code jsonTarget} null) the human
     * report goes to stdout; with {@code --json} or {@code --json -} the JSON object alone goes to stdout;
     * with {@code --json FILE} the JSON goes to FILE and the report to stdout.
     */
    public static void emit(PrintWriter out, String jsonTarget, java.util.function.Supplier<String> json,
                            java.util.function.Supplier<String> report) {
        if (jsonTarget == null) {
            out.print(report.get());
        } else if (jsonTarget.equals("-")) {
            out.println(json.get());
        } else {
            try {
                java.nio.file.Files.writeString(java.nio.file.Path.of(jsonTarget), json.get() + System.lineSeparator(),
                    java.nio.charset.StandardCharsets.UTF_8);
            } catch (IOException | RuntimeException e) {
                throw new UsageException("cannot write " + jsonTarget + ": " + e.getMessage());
            }
            out.print(report.get());
        }
        out.flush();
    }

    /**
     * {@link Host#create} for a command whose options ({@code asked}, e.g. {@code "--memory 1t"}) decided
     * the host's size: when the host cannot supply that memory, or the engine's tables for it, the
     * failure is a {@link UsageException} naming those options as the user typed them and the reason.
     */
    static Host createHost(long bytes, String asked) {
        try {
            return Host.create(bytes);
        } catch (NativeMemoryException e) {
            throw new UsageException(asked + ": " + e.getMessage());
        } catch (OutOfMemoryError e) { // the engine's frame table is direct buffers sized by the host
            throw new UsageException(asked + ": cannot allocate the frame table for "
                + NativeMemoryException.describe(bytes) + " of host memory: " + e.getMessage());
        }
    }

    /** The {@code --paging} option's value: nested, shadow or pv. */
    static io.vmpage.engine.PagingMode pagingMode(String paging) {
        return switch (paging) {
            case "nested" -> io.vmpage.engine.PagingMode.NESTED;
            case "shadow" -> io.vmpage.engine.PagingMode.SHADOW;
            case "pv" -> io.vmpage.engine.PagingMode.PARAVIRTUAL;
            default -> throw new UsageException("--paging " + paging + " must be nested, shadow or pv");
        };
    }

    /** {@link #pagingMode}'s inverse: the name a {@code --paging} flag and a JSON report give {@code mode}. */
    static String pagingName(io.vmpage.engine.PagingMode mode) {
        return switch (mode) {
            case NESTED -> "nested";
            case SHADOW -> "shadow";
            case PARAVIRTUAL -> "pv";
        };
    }

    /** The {@code --method} option's value for paging mode {@code mode} (dirty bits need nested paging). */
    static io.vmpage.engine.dirty.DirtyTracking tracking(String method, io.vmpage.engine.PagingMode mode) {
        io.vmpage.engine.dirty.DirtyTracking how = switch (method) {
            case "write-protect" -> io.vmpage.engine.dirty.DirtyTracking.WRITE_PROTECT;
            case "dirty-bits" -> io.vmpage.engine.dirty.DirtyTracking.DIRTY_BITS;
            case "dirty-ring" -> io.vmpage.engine.dirty.DirtyTracking.DIRTY_RING;
            default -> throw new UsageException("--method " + method + " must be write-protect, dirty-bits or dirty-ring");
        };
        if (how == io.vmpage.engine.dirty.DirtyTracking.DIRTY_BITS && mode != io.vmpage.engine.PagingMode.NESTED) {
            throw new UsageException("--method dirty-bits needs --paging nested (EPT A/D bits)");
        }
        return how;
    }

    /**
     * The {@code --plot} file, checked before the migration runs: a name ending in .png in a directory
     * that exists and can be written to (the current directory for a bare name).
     */
    static java.nio.file.Path plotFile(String value) {
        if (!value.toLowerCase(java.util.Locale.ROOT).endsWith(".png")) {
            throw new UsageException("--plot " + value + " must be a file name ending in .png");
        }
        java.nio.file.Path file;
        try {
            file = java.nio.file.Path.of(value).toAbsolutePath();
        } catch (java.nio.file.InvalidPathException e) {
            throw new UsageException("--plot " + value + ": " + e.getMessage());
        }
        java.nio.file.Path dir = file.getParent();
        if (java.nio.file.Files.isDirectory(file)) {
            throw new UsageException("--plot " + value + " is a directory; it must be a file name ending in .png");
        }
        if (!java.nio.file.Files.isDirectory(dir)) {
            throw new UsageException("--plot " + value + ": directory " + dir + " does not exist");
        }
        if (!java.nio.file.Files.isWritable(dir)) {
            throw new UsageException("--plot " + value + ": directory " + dir + " is not writable");
        }
        return file;
    }

    /** Thrown by a subcommand for bad user input found after parsing (a malformed file, say): exit 2. */
    public static final class UsageException extends RuntimeException {
        private static final long serialVersionUID = 1L;

        public UsageException(String message) {
            super(message);
        }
    }

    /** Version from the build (filtered resource). */
    public static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() throws IOException {
            Properties p = new Properties();
            try (InputStream in = Cli.class.getResourceAsStream("/io/vmpage/bench/version.properties")) {
                if (in != null) {
                    p.load(in);
                }
            }
            return new String[] {"vmpage " + p.getProperty("version", "unknown")
                + " (Java " + Runtime.version() + ", " + System.getProperty("java.vm.name") + ")"};
        }
    }
}
