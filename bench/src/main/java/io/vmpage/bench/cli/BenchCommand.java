package io.vmpage.bench.cli;

import com.fasterxml.jackson.databind.JsonNode;
import io.vmpage.bench.JvmFlags;
import io.vmpage.bench.results.Baselines;
import io.vmpage.bench.results.BenchmarkResult;
import io.vmpage.bench.results.JmhJson;
import io.vmpage.bench.results.ResultTable;
import io.vmpage.bench.results.ResultsDirectory;
import io.vmpage.bench.results.RunProfile;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.SortedSet;
import java.util.TreeSet;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;
import java.util.stream.Collectors;
import org.openjdk.jmh.profile.GCProfiler;
import org.openjdk.jmh.results.format.ResultFormatType;
import org.openjdk.jmh.runner.BenchmarkList;
import org.openjdk.jmh.runner.BenchmarkListEntry;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.RunnerException;
import org.openjdk.jmh.runner.format.OutputFormat;
import org.openjdk.jmh.runner.format.OutputFormatFactory;
import org.openjdk.jmh.runner.options.ChainedOptionsBuilder;
import org.openjdk.jmh.runner.options.Options;
import org.openjdk.jmh.runner.options.OptionsBuilder;
import org.openjdk.jmh.runner.options.VerboseMode;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/**
 * {@code vmpage bench}: runs the JMH suite in this process (each benchmark in a forked JVM with vmpage's
 * JVM flags), merges the results into {@code jmh-results/<date>-<short sha>.json} under the repository
 * root and regenerates {@code jmh-results/README.md}.
 */
@Command(name = "bench",
    mixinStandardHelpOptions = true,
    versionProvider = Cli.Version.class,
    description = {"Runs the JMH benchmarks and updates jmh-results/ (JSON per day and commit, README table).",
        "The repository root is the system property vmpage.root, else the current directory."})
public final class BenchCommand implements Callable<Integer> {
    /** Every benchmark of the suite. */
    static final String ALL = "^io\\.vmpage\\.bench\\.jmh\\.";
    /** Heap of each fork; the benchmarks' memory is off-heap. */
    static final String FORK_HEAP = "-Xmx4g";

    @Spec
    CommandSpec spec;

    @Option(names = "--quick", description = "Smoke run: 1 fork, warmup 1 x 1 s, measurement 3 x 500 ms"
        + " (default: 2 forks, warmup 3 x 1 s, measurement 5 x 1 s).")
    boolean quick;

    @Option(names = "--list", description = "List the matching benchmarks and exit.")
    boolean list;

    @Parameters(paramLabel = "PATTERN", arity = "0..*",
        description = "JMH regexes matched against package.Class.method (default: the whole suite).")
    List<String> patterns = new ArrayList<>();

    @Override
    public Integer call() throws IOException {
        PrintWriter out = spec.commandLine().getOut();
        List<String> includes = patterns.isEmpty() ? List.of(ALL) : patterns;
        SortedSet<String> selected = select(includes);
        if (list) {
            selected.forEach(out::println);
            out.flush();
            return Cli.OK;
        }
        RunProfile profile = quick ? RunProfile.QUICK : RunProfile.FULL;
        Path root = root();
        Path json = Files.createTempFile("vmpage-jmh-", ".json");
        List<JsonNode> fresh;
        try {
            new Runner(options(includes, profile, json)).run();
            fresh = Files.size(json) == 0 ? List.of() : JmhJson.read(json);
        } catch (RunnerException e) {
            return failed("JMH run failed: " + e.getMessage());
        } finally {
            Files.deleteIfExists(json);
        }

        if (fresh.isEmpty()) {
            return failed("no benchmark produced a result (see the JMH output above)");
        }

        ResultsDirectory results = ResultsDirectory.under(root);
        Baselines baselines = Baselines.fromClasspath();
        Path file = results.store(fresh, LocalDate.now(), shortCommit(root));
        Path readme = results.writeReadme(baselines);

        Set<String> ran = fresh.stream().map(BenchmarkResult::key).collect(Collectors.toSet());
        ResultTable table = ResultTable.of(ResultsDirectory.load(file), baselines).only(ran);
        out.println();
        out.print(table.markdown());
        out.println();
        out.println("table:   " + readme);
        out.println("results: " + file);
        out.flush();

        Set<String> produced = fresh.stream().map(n -> n.path("benchmark").asText()).collect(Collectors.toSet());
        List<String> missing = selected.stream().filter(b -> !produced.contains(b)).toList();
        return missing.isEmpty() ? Cli.OK : failed("no result for " + String.join(", ", missing)
            + " (see the JMH output above)");
    }

    /** The benchmarks matching the patterns; every pattern must match at least one. */
    static SortedSet<String> select(List<String> includes) {
        OutputFormat silent = OutputFormatFactory.createFormatInstance(
            new PrintStream(OutputStream.nullOutputStream()), VerboseMode.SILENT);
        BenchmarkList benchmarks = BenchmarkList.defaultList();
        SortedSet<String> selected = new TreeSet<>();
        for (String include : includes) {
            try {
                Pattern.compile(include);
            } catch (PatternSyntaxException e) {
                throw new Cli.UsageException("pattern '" + include + "' is not a valid regex: " + e.getDescription());
            }
            Set<String> matched = benchmarks.find(silent, List.of(include), List.of()).stream()
                .map(BenchmarkListEntry::getUsername).collect(Collectors.toSet());
            if (matched.isEmpty()) {
                throw new Cli.UsageException("no benchmark matches '" + include + "' (see 'vmpage bench --list')");
            }
            selected.addAll(matched);
        }
        return selected;
    }

    private static Options options(List<String> includes, RunProfile profile,
                                   Path json) {
        List<String> forkArgs = new ArrayList<>(JvmFlags.get());
        forkArgs.add(FORK_HEAP);
        ChainedOptionsBuilder options = new OptionsBuilder()
            .forks(profile.forks())
            .warmupIterations(profile.warmupIterations())
            .warmupTime(profile.warmupTime())
            .measurementIterations(profile.measurementIterations())
            .measurementTime(profile.measurementTime())
            .threads(1)
            .addProfiler(GCProfiler.class)
            .jvmArgsAppend(forkArgs.toArray(String[]::new))
            .resultFormat(ResultFormatType.JSON)
            .result(json.toString());
        includes.forEach(options::include);
        return options.build();
    }

    private int failed(String message) {
        PrintWriter err = spec.commandLine().getErr();
        err.println("vmpage: " + message);
        err.flush();
        return Cli.VERIFICATION_FAILED;
    }

    /** Repository root: system property {@code vmpage.root} (set by the launcher), else the current directory. */
    static Path root() {
        return Path.of(System.getProperty("vmpage.root", ".")).toAbsolutePath().normalize();
    }

    /** {@code git rev-parse --short HEAD} in {@code root}, or {@code nogit} without git or commits. */
    static String shortCommit(Path root) {
        try {
            Process git = new ProcessBuilder("git", "rev-parse", "--short", "HEAD")
                .directory(root.toFile())
                .redirectError(ProcessBuilder.Redirect.DISCARD)
                .start();
            String sha;
            try (InputStream in = git.getInputStream()) {
                sha = new String(in.readAllBytes(), StandardCharsets.UTF_8).strip();
            }
            boolean exited = git.waitFor(10, TimeUnit.SECONDS);
            if (!exited) {
                git.destroyForcibly();
                return "nogit";
            }
            return git.exitValue() == 0 && sha.matches("[0-9a-f]{4,40}") ? sha : "nogit";
        } catch (IOException e) {
            return "nogit";
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return "nogit";
        }
    }
}
