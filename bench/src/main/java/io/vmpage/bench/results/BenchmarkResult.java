package io.vmpage.bench.results;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.Collections;
import java.util.Iterator;
import java.util.Map;
import java.util.SortedMap;
import java.util.TreeMap;
import java.util.stream.Collectors;

/**
 * One JMH result object reduced to what the results table shows, plus the name of the JSON file it
 * came from.
 *
 * @param benchmark fully qualified benchmark name, {@code package.Class.method}
 * @param params    JMH parameters, sorted by name (empty when the benchmark has none)
 * @param score     primary score
 * @param error     99.9% confidence half-width, NaN when JMH could not compute it
 * @param unit      score unit, e.g. {@code ns/op}
 * @param allocBytesPerOp JMH's {@code gc.alloc.rate.norm}, NaN when the GC profiler did not run
 * @param command   the {@code vmpage bench} command (see {@link RunProfile}) that produced it
 * @param source    file name of the JSON file holding it
 */
public record BenchmarkResult(String benchmark, SortedMap<String, String> params, double score, double error,
                              String unit, double allocBytesPerOp, String command, String source) {
    /** Name suffix of the GC profiler's normalized allocation rate (older JMH prefixes it with a dot). */
    static final String ALLOC_METRIC = "gc.alloc.rate.norm";

    /** Reads one JMH result object. */
    public static BenchmarkResult of(JsonNode node, String source) {
        String benchmark = node.path("benchmark").asText("");
        if (benchmark.isEmpty()) {
            throw new IllegalArgumentException(source + ": a result has no \"benchmark\" name");
        }
        JsonNode primary = node.path("primaryMetric");
        return new BenchmarkResult(benchmark, params(node), number(primary.path("score")),
            number(primary.path("scoreError")), primary.path("scoreUnit").asText(""),
            allocation(node.path("secondaryMetrics")), RunProfile.commandOf(node), source);
    }

    /** Merge key of a JMH result object: benchmark name plus its parameters. */
    public static String key(JsonNode node) {
        return key(node.path("benchmark").asText(""), params(node));
    }

    static String key(String benchmark, Map<String, String> params) {
        return params.isEmpty() ? benchmark : benchmark + " " + paramsText(params);
    }

    /** This result's merge key. */
    public String key() {
        return key(benchmark, params);
    }

    /** Benchmark class, fully qualified. */
    public String className() {
        int dot = benchmark.lastIndexOf('.');
        return dot < 0 ? "" : benchmark.substring(0, dot);
    }

    /** Benchmark method. */
    public String method() {
        return benchmark.substring(benchmark.lastIndexOf('.') + 1);
    }

    /** {@code Class.method}. */
    public String shortName() {
        String cls = className();
        return cls.substring(cls.lastIndexOf('.') + 1) + "." + method();
    }

    /** Parameters as {@code a=1,b=2}, or empty. */
    public String paramsText() {
        return paramsText(params);
    }

    private static String paramsText(Map<String, String> params) {
        return params.entrySet().stream().map(e -> e.getKey() + "=" + e.getValue())
            .collect(Collectors.joining(","));
    }

    private static SortedMap<String, String> params(JsonNode node) {
        SortedMap<String, String> params = new TreeMap<>();
        Iterator<Map.Entry<String, JsonNode>> fields = node.path("params").fields();
        while (fields.hasNext()) {
            Map.Entry<String, JsonNode> e = fields.next();
            params.put(e.getKey(), e.getValue().asText());
        }
        return Collections.unmodifiableSortedMap(params);
    }

    private static double allocation(JsonNode secondary) {
        Iterator<Map.Entry<String, JsonNode>> fields = secondary.fields();
        while (fields.hasNext()) {
            Map.Entry<String, JsonNode> e = fields.next();
            if (e.getKey().endsWith(ALLOC_METRIC)) {
                return number(e.getValue().path("score"));
            }
        }
        return Double.NaN;
    }

    /** JMH writes NaN and infinities as strings. */
    private static double number(JsonNode value) {
        if (value.isNumber()) {
            return value.doubleValue();
        }
        if (value.isTextual()) {
            try {
                return Double.parseDouble(value.asText());
            } catch (NumberFormatException e) {
                return Double.NaN;
            }
        }
        return Double.NaN;
    }
}
