package io.vmpage.bench.results;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.LocalDate;
import java.time.format.DateTimeParseException;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * The {@code jmh-results} directory: one JMH JSON file per day and commit,
 * {@code <yyyy-mm-dd>-<short-sha>.json}, and a {@code README.md} table generated from all of them.
 */
public final class ResultsDirectory {
    /** Directory name under the repository root. */
    public static final String NAME = "jmh-results";
    public static final String README = "README.md";
    private static final Pattern DATED = Pattern.compile("(\\d{4}-\\d{2}-\\d{2})-.*\\.json");

    private final Path dir;
    /** Commit time (epoch seconds) of each full commit id known, for ordering files of one day. */
    private final Map<String, Long> commitTimes;

    public ResultsDirectory(Path dir) {
        this(dir, Map.of());
    }

    /** A directory whose files of one day are ordered by the time of the commit their name gives, from {@code commitTimes}. */
    public ResultsDirectory(Path dir, Map<String, Long> commitTimes) {
        this.dir = dir;
        this.commitTimes = commitTimes;
    }

    /**
     * The results directory of the repository at {@code root}, with the commit times git reports there
     * ({@code git log}), so a fresh clone, whose files all have the clone's modification time, still
     * orders one day's files by when their commits were made.
     */
    public static ResultsDirectory under(Path root) {
        return new ResultsDirectory(root.resolve(NAME), gitCommitTimes(root));
    }

    /** Full commit id to commit time of every commit reachable from HEAD in {@code root}; empty without git. */
    static Map<String, Long> gitCommitTimes(Path root) {
        try {
            Process git = new ProcessBuilder("git", "log", "--format=%H %ct")
                .directory(root.toFile())
                .redirectError(ProcessBuilder.Redirect.DISCARD)
                .start();
            Map<String, Long> times = new java.util.HashMap<>();
            try (java.io.BufferedReader in = new java.io.BufferedReader(
                new java.io.InputStreamReader(git.getInputStream(), StandardCharsets.UTF_8))) {
                for (String line = in.readLine(); line != null; line = in.readLine()) {
                    String[] f = line.strip().split(" ");
                    if (f.length == 2 && f[0].matches("[0-9a-f]{40}") && f[1].matches("\\d+")) {
                        times.put(f[0], Long.parseLong(f[1]));
                    }
                }
            }
            if (!git.waitFor(30, java.util.concurrent.TimeUnit.SECONDS)) {
                git.destroyForcibly();
                return Map.of();
            }
            return git.exitValue() == 0 ? times : Map.of();
        } catch (IOException e) {
            return Map.of();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return Map.of();
        }
    }

    /** The time of the commit {@code <date>-<sha>.json} names, or Long.MAX_VALUE when it is not known (a newer run). */
    private long commitTime(Path file) {
        String name = file.getFileName().toString();
        if (commitTimes.isEmpty() || name.length() < 16) {
            return Long.MAX_VALUE;
        }
        String sha = name.substring(11, name.length() - ".json".length());
        if (!sha.matches("[0-9a-f]{4,40}")) {
            return Long.MAX_VALUE;
        }
        for (Map.Entry<String, Long> e : commitTimes.entrySet()) {
            if (e.getKey().startsWith(sha)) {
                return e.getValue();
            }
        }
        return Long.MAX_VALUE;
    }

    public Path dir() {
        return dir;
    }

    /** The result file of a day and commit. */
    public Path resultFile(LocalDate date, String commit) {
        return dir.resolve(date + "-" + commit + ".json");
    }

    /**
     * Merges {@code fresh} JMH results into the file of {@code date} and {@code commit} (see
     * {@link JmhJson#merge}), creating it when absent, and returns the file.
     */
    public Path store(List<JsonNode> fresh, LocalDate date, String commit) throws IOException {
        Files.createDirectories(dir);
        Path file = resultFile(date, commit);
        List<JsonNode> existing = Files.exists(file) ? JmhJson.read(file) : List.of();
        JmhJson.write(file, JmhJson.merge(existing, fresh));
        return file;
    }

    /**
     * The JSON files, oldest first: by the date in the name, then by the time of the commit the name gives
     * (when known), then by modification time, then by name.
     */
    public List<Path> resultFiles() throws IOException {
        if (!Files.isDirectory(dir)) {
            return List.of();
        }
        List<Dated> files = new ArrayList<>();
        try (Stream<Path> list = Files.list(dir)) {
            for (Path p : (Iterable<Path>) list::iterator) {
                if (p.getFileName().toString().endsWith(".json") && Files.isRegularFile(p)) {
                    files.add(new Dated(p, nameDate(p), commitTime(p), Files.getLastModifiedTime(p).toMillis()));
                }
            }
        }
        files.sort(Comparator.comparing(Dated::date).thenComparingLong(Dated::committed).thenComparingLong(Dated::modified)
            .thenComparing(d -> d.path().getFileName().toString()));
        return files.stream().map(Dated::path).toList();
    }

    private record Dated(Path path, LocalDate date, long committed, long modified) {
    }

    /** Every result of every file, files oldest first. */
    public List<BenchmarkResult> loadAll() throws IOException {
        List<BenchmarkResult> all = new ArrayList<>();
        for (Path file : resultFiles()) {
            all.addAll(load(file));
        }
        return all;
    }

    /** The results of one file. */
    public static List<BenchmarkResult> load(Path file) throws IOException {
        String source = file.getFileName().toString();
        return JmhJson.read(file).stream().map(node -> BenchmarkResult.of(node, source)).toList();
    }

    /** Regenerates {@code README.md} from all result files and returns its path. */
    public Path writeReadme(Baselines baselines) throws IOException {
        Files.createDirectories(dir);
        Path readme = dir.resolve(README);
        Files.writeString(readme, Readme.render(ResultTable.of(loadAll(), baselines)), StandardCharsets.UTF_8);
        return readme;
    }

    /** Date from a {@code yyyy-mm-dd-...json} name; files not named so sort before all dated ones. */
    private static LocalDate nameDate(Path file) {
        Matcher m = DATED.matcher(file.getFileName().toString());
        if (m.matches()) {
            try {
                return LocalDate.parse(m.group(1));
            } catch (DateTimeParseException e) {
                return LocalDate.MIN;
            }
        }
        return LocalDate.MIN;
    }
}
