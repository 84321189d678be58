package io.vmpage.bench.results;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.time.LocalDate;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ResultsTest {
    private static final LocalDate DAY = LocalDate.of(2024, 5, 6);
    private static final Baselines BASELINES = Baselines.fromClasspath();

    @TempDir
    Path dir;

    private ResultsDirectory results() {
        return new ResultsDirectory(dir);
    }

    private static Map<String, ResultTable.Row> rowsByKey(ResultTable table) {
        return table.rows().stream().collect(Collectors.toMap(r -> r.result().key(), Function.identity()));
    }

    private static String key(String method, String region) {
        return JmhFiles.FAKE + method + (region == null ? "" : " region=" + region);
    }

    @Test
    void storeCreatesTheDayAndCommitFile() throws IOException {
        Path file = results().store(JmhJson.read(new JmhFiles().add("raw", "1g", 2).write(dir.resolve("in.tmp"))),
            DAY, "abc1234");
        assertEquals(dir.resolve("2024-05-06-abc1234.json"), file);
        assertEquals(1, JmhJson.read(file).size());
    }

    @Test
    void mergeReplacesSameKeyInPlaceAndKeepsOthers() throws IOException {
        Path file = results().resultFile(DAY, "abc1234");
        new JmhFiles().add("raw", "cached", 1).add("raw", "1g", 2).add("plain", null, 3).write(file);
        List<JsonNode> fresh = JmhJson.read(new JmhFiles().add("raw", "cached", 10).add("fast", "cached", 5)
            .write(dir.resolve("fresh.tmp")));

        results().store(fresh, DAY, "abc1234");

        List<BenchmarkResult> merged = ResultsDirectory.load(file);
        assertEquals(List.of(key("raw", "cached"), key("raw", "1g"), key("plain", null), key("fast", "cached")),
            merged.stream().map(BenchmarkResult::key).toList());
        assertEquals(List.of(10.0, 2.0, 3.0, 5.0), merged.stream().map(BenchmarkResult::score).toList());
        assertTrue(JmhJson.read(file).get(0).has("jmhVersion"), "merged entries stay in JMH's format");
    }

    @Test
    void ratioComesFromTheAnnotatedBaselineWithTheSameParams() throws IOException {
        new JmhFiles().add("raw", "cached", 2).add("fast", "cached", 3).add("slow", "cached", 9)
            .add("raw", "1g", 40).add("fast", "1g", 50).add("plain", null, 7)
            .write(results().resultFile(DAY, "abc1234"));

        Map<String, ResultTable.Row> rows = rowsByKey(ResultTable.of(results().loadAll(), BASELINES));

        ResultTable.Row fast = rows.get(key("fast", "cached"));
        assertEquals("raw", fast.baseline());
        assertEquals(1.5, fast.ratio(), 1e-9);
        assertEquals(4.5, rows.get(key("slow", "cached")).ratio(), 1e-9);
        assertEquals(1.25, rows.get(key("fast", "1g")).ratio(), 1e-9);
        ResultTable.Row raw = rows.get(key("raw", "cached"));
        assertEquals(ResultTable.SELF, raw.baseline());
        assertEquals(1.0, raw.ratio());
        ResultTable.Row plain = rows.get(key("plain", null));
        assertEquals(ResultTable.NONE, plain.baseline());
        assertTrue(Double.isNaN(plain.ratio()));

        String table = ResultTable.of(results().loadAll(), BASELINES).markdown();
        assertTrue(table.contains("| FakeBench.fast "), table);
        assertTrue(table.matches("(?s).*\\| FakeBench\\.fast +\\| region=cached +\\| +3\\.000 \\| ns/op \\| raw +\\|"
            + " +2\\.000 \\| +1\\.50 \\|.*"), table);
        assertTrue(table.matches("(?s).*\\| FakeBench\\.plain +\\| - +\\| +7\\.000 \\| ns/op \\| - +\\| +- \\| +- \\|.*"),
            table);
    }

    @Test
    void rowsFollowTheirBaseline() throws IOException {
        new JmhFiles().add("slow", null, 9).add("plain", null, 7).add("fast", null, 3).add("raw", null, 2)
            .write(results().resultFile(DAY, "abc1234"));
        assertEquals(List.of("plain", "raw", "fast", "slow"), ResultTable.of(results().loadAll(), BASELINES).rows()
            .stream().map(r -> r.result().method()).toList());
    }

    @Test
    void newestFileWinsByDateThenModificationTime() throws IOException {
        Path older = new JmhFiles().add("raw", null, 2).add("fast", null, 3).add("plain", null, 1)
            .write(dir.resolve("2024-05-05-aaaaaaa.json"));
        // Same date, so modification time decides (not the name); the earlier date wins over a later mtime.
        Path sameDayLate = new JmhFiles().add("raw", null, 4).add("fast", null, 10)
            .write(dir.resolve("2024-05-06-0000000.json"));
        Path sameDayEarly = new JmhFiles().add("raw", null, 100).add("fast", null, 100).add("plain", null, 5)
            .write(dir.resolve("2024-05-06-fffffff.json"));
        Files.setLastModifiedTime(older, FileTime.fromMillis(3_000_000L));
        Files.setLastModifiedTime(sameDayEarly, FileTime.fromMillis(1_000_000L));
        Files.setLastModifiedTime(sameDayLate, FileTime.fromMillis(2_000_000L));

        assertEquals(List.of(older, sameDayEarly, sameDayLate), results().resultFiles());
        Map<String, ResultTable.Row> rows = rowsByKey(ResultTable.of(results().loadAll(), BASELINES));
        assertEquals(10.0, rows.get(key("fast", null)).result().score());
        assertEquals("2024-05-06-0000000.json", rows.get(key("fast", null)).result().source());
        assertEquals(2.5, rows.get(key("fast", null)).ratio(), 1e-9);
        assertEquals(5.0, rows.get(key("plain", null)).result().score());
        assertEquals("2024-05-06-fffffff.json", rows.get(key("plain", null)).result().source());
    }

    /** Files of one day are ordered by when their commits were made, before modification times (a fresh clone's are all alike). */
    @Test
    void oneDaysFilesAreOrderedByTheirCommitsTimes() throws IOException {
        Path late = new JmhFiles().add("raw", null, 4).write(dir.resolve("2024-05-06-0000000.json"));
        Path early = new JmhFiles().add("raw", null, 9).write(dir.resolve("2024-05-06-fffffff.json"));
        Path unknown = new JmhFiles().add("raw", null, 7).write(dir.resolve("2024-05-06-1234567.json"));
        for (Path p : List.of(late, early, unknown)) {
            Files.setLastModifiedTime(p, FileTime.fromMillis(1_000_000L)); // as a clone leaves them
        }
        Map<String, Long> commits = Map.of("0000000" + "a".repeat(33), 200L, "fffffff" + "b".repeat(33), 100L);
        ResultsDirectory results = new ResultsDirectory(dir, commits);
        assertEquals(List.of(early, late, unknown), results.resultFiles(), "by commit time; an unknown commit is the newest");
    }

    @Test
    void baselineIsOnlyTakenFromTheSameFile() throws IOException {
        new JmhFiles().add("raw", null, 2).add("fast", null, 3).write(dir.resolve("2024-05-05-aaaaaaa.json"));
        new JmhFiles().add("fast", null, 8).write(dir.resolve("2024-05-06-bbbbbbb.json"));

        ResultTable.Row fast = rowsByKey(ResultTable.of(results().loadAll(), BASELINES)).get(key("fast", null));
        assertEquals(8.0, fast.result().score());
        assertEquals("raw", fast.baseline());
        assertNull(fast.baselineResult());
        assertTrue(Double.isNaN(fast.ratio()));
    }

    @Test
    void allocationIsReadFromTheGcSecondaryMetric() throws IOException {
        new JmhFiles().add("raw", null, 2, 24.0).add("fast", null, 3, Double.NaN)
            .write(results().resultFile(DAY, "abc1234"));

        Map<String, ResultTable.Row> rows = rowsByKey(ResultTable.of(results().loadAll(), BASELINES));
        assertEquals(24.0, rows.get(key("raw", null)).result().allocBytesPerOp());
        assertTrue(Double.isNaN(rows.get(key("fast", null)).result().allocBytesPerOp()));
        String table = ResultTable.of(results().loadAll(), BASELINES).markdown();
        assertTrue(table.matches("(?s).*\\| FakeBench\\.raw .*\\| +24\\.00 \\| 2024-05-06-abc1234\\.json \\|.*"), table);
    }

    @Test
    void readmeHasCommandsNoteAndTable() throws IOException {
        new JmhFiles().add("raw", null, 2).add("fast", null, 3).write(results().resultFile(DAY, "abc1234"));

        String readme = Files.readString(results().writeReadme(BASELINES));

        assertTrue(readme.startsWith("# "), readme);
        assertTrue(readme.contains("`./vmpage bench`"), readme);
        assertTrue(readme.contains("`./vmpage bench --quick`"), readme);
        assertTrue(readme.contains("- `2024-05-06-abc1234.json`: `./vmpage bench --quick`"), readme);
        assertTrue(readme.contains("2-core"), readme);
        assertTrue(readme.contains("| Benchmark "), readme);
        assertTrue(readme.contains("| FakeBench.fast "), readme);
    }

    @Test
    void unknownBenchmarkClassHasNoBaseline() throws IOException {
        Files.writeString(results().resultFile(DAY, "abc1234"), "[{\"benchmark\":\"gone.Bench.run\","
            + "\"primaryMetric\":{\"score\":1.0,\"scoreError\":0.1,\"scoreUnit\":\"ns/op\"}}]");

        ResultTable.Row row = ResultTable.of(results().loadAll(), BASELINES).rows().get(0);
        assertEquals(ResultTable.NONE, row.baseline());
        assertEquals("Bench.run", row.result().shortName());
        assertTrue(row.result().command().startsWith("custom"), row.result().command());
    }

    @Test
    void malformedFileIsReportedByName() throws IOException {
        Path file = results().resultFile(DAY, "abc1234");
        Files.writeString(file, "{\"not\": \"an array\"}");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> results().loadAll());
        assertTrue(e.getMessage().contains(file.getFileName().toString()), e.getMessage());
    }

    @Test
    void scoresKeepAboutFourSignificantDigits() {
        assertEquals("1.235 ± 0.012", ResultTable.score(1.23456, 0.0123));
        assertEquals("657.5", ResultTable.score(657.54, Double.NaN));
        assertEquals("444315", ResultTable.score(444315.2, Double.NaN));
    }
}
