package io.vmpage.bench.results;

import java.util.ArrayList;
import java.util.Collection;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;

/**
 * The results table: for each key (benchmark and parameters) the newest result, paired with its in-run
 * baseline, i.e. the result of the benchmark its {@link io.vmpage.bench.jmh.Baseline} annotation names,
 * with the same parameters, from the same JSON file.
 */
public final class ResultTable {
    /** Baseline column of a benchmark that is itself some benchmark's baseline. */
    public static final String SELF = "(baseline)";
    /** Shown where there is nothing to show. */
    public static final String NONE = "-";

    /**
     * One table row.
     *
     * @param result   the benchmark's result
     * @param baseline baseline method name, {@link #SELF}, or {@link #NONE}
     * @param baselineResult the baseline's result from the same file, null when missing or none
     * @param ratio    score / baseline score, NaN when there is no baseline result
     */
    public record Row(BenchmarkResult result, String baseline, BenchmarkResult baselineResult, double ratio) {
    }

    private static final String[] HEADER = {"Benchmark", "Params", "Score ± error", "Unit", "Baseline",
        "Baseline score", "Ratio", "Alloc B/op", "Source"};
    private static final boolean[] RIGHT = {false, false, true, false, false, true, true, true, false};

    private final List<Row> rows;

    private ResultTable(List<Row> rows) {
        this.rows = List.copyOf(rows);
    }

    /**
     * The table of {@code all} results, given in file order oldest first (a later result replaces an
     * earlier one with the same key), with baselines from {@code baselines}.
     */
    public static ResultTable of(List<BenchmarkResult> all, Baselines baselines) {
        Map<String, BenchmarkResult> newest = new LinkedHashMap<>();
        Map<String, BenchmarkResult> bySourceAndKey = new HashMap<>();
        for (BenchmarkResult r : all) {
            newest.put(r.key(), r);
            bySourceAndKey.put(r.source() + "\n" + r.key(), r);
        }
        List<Row> rows = new ArrayList<>();
        for (BenchmarkResult r : newest.values()) {
            Optional<String> baseline = baselines.baselineOf(r.className(), r.method());
            if (baseline.isPresent()) {
                String baselineKey = BenchmarkResult.key(r.className() + "." + baseline.get(), r.params());
                BenchmarkResult base = bySourceAndKey.get(r.source() + "\n" + baselineKey);
                double ratio = base != null && base.unit().equals(r.unit()) ? r.score() / base.score() : Double.NaN;
                rows.add(new Row(r, baseline.get(), base, ratio));
            } else if (baselines.isBaseline(r.className(), r.method())) {
                rows.add(new Row(r, SELF, r, 1.0));
            } else {
                rows.add(new Row(r, NONE, null, Double.NaN));
            }
        }
        rows.sort(Comparator.comparing((Row row) -> row.result().className())
            .thenComparing(row -> row.result().paramsText())
            .thenComparing(ResultTable::group)
            .thenComparing(row -> !SELF.equals(row.baseline()))
            .thenComparing(row -> row.result().method()));
        return new ResultTable(rows);
    }

    /** Rows next to their baseline: a baseline, then the benchmarks measured against it. */
    private static String group(Row row) {
        return SELF.equals(row.baseline()) || NONE.equals(row.baseline()) ? row.result().method() : row.baseline();
    }

    public List<Row> rows() {
        return rows;
    }

    /** The rows whose key is in {@code keys}. */
    public ResultTable only(Collection<String> keys) {
        Set<String> wanted = Set.copyOf(keys);
        return new ResultTable(rows.stream().filter(r -> wanted.contains(r.result().key())).toList());
    }

    /** The table in Markdown, columns padded so it also reads as plain text. */
    public String markdown() {
        List<String[]> cells = new ArrayList<>();
        cells.add(HEADER);
        for (Row row : rows) {
            BenchmarkResult r = row.result();
            cells.add(new String[] {
                r.shortName(),
                r.paramsText().isEmpty() ? NONE : r.paramsText(),
                score(r.score(), r.error()),
                r.unit(),
                row.baseline(),
                row.baselineResult() == null ? NONE : score(row.baselineResult().score(), Double.NaN),
                Double.isNaN(row.ratio()) ? NONE : String.format(Locale.ROOT, "%.2f", row.ratio()),
                Double.isNaN(r.allocBytesPerOp()) ? NONE : String.format(Locale.ROOT, "%.2f", r.allocBytesPerOp()),
                r.source()});
        }
        int[] width = new int[HEADER.length];
        for (String[] line : cells) {
            for (int c = 0; c < line.length; c++) {
                width[c] = Math.max(width[c], line[c].length());
            }
        }
        StringBuilder out = new StringBuilder();
        appendLine(out, cells.get(0), width);
        String[] rule = new String[HEADER.length];
        for (int c = 0; c < rule.length; c++) {
            rule[c] = RIGHT[c] ? "-".repeat(width[c] - 1) + ":" : "-".repeat(width[c]);
        }
        appendLine(out, rule, width);
        for (String[] line : cells.subList(1, cells.size())) {
            appendLine(out, line, width);
        }
        return out.toString();
    }

    private static void appendLine(StringBuilder out, String[] line, int[] width) {
        out.append('|');
        for (int c = 0; c < line.length; c++) {
            String pad = " ".repeat(width[c] - line[c].length());
            out.append(' ').append(RIGHT[c] ? pad + line[c] : line[c] + pad).append(" |");
        }
        out.append('\n');
    }

    /** Score with about four significant digits, and its error to the same decimals when known. */
    static String score(double score, double error) {
        double magnitude = Math.abs(score);
        int decimals = magnitude < 10 ? 3 : magnitude < 100 ? 2 : magnitude < 1000 ? 1 : 0;
        String format = "%." + decimals + "f";
        String text = String.format(Locale.ROOT, format, score);
        return Double.isNaN(error) ? text : text + " ± " + String.format(Locale.ROOT, format, error);
    }
}
