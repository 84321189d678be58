package io.vmpage.bench.results;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Reading, writing and merging files in JMH's JSON result format: an array of result objects, each with
 * {@code benchmark}, optional {@code params}, {@code primaryMetric} and {@code secondaryMetrics}. Objects
 * are kept as JSON trees, so a merged file is still exactly JMH's format.
 */
public final class JmhJson {
    private static final ObjectMapper MAPPER = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private JmhJson() {
    }

    /** The result objects of a JMH JSON file. */
    public static List<JsonNode> read(Path file) throws IOException {
        JsonNode root;
        try {
            root = MAPPER.readTree(file.toFile());
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException(file + " is not valid JSON: " + e.getOriginalMessage());
        }
        if (root == null || !root.isArray()) {
            throw new IllegalArgumentException(file + " is not a JMH result file (expected a JSON array)");
        }
        List<JsonNode> results = new ArrayList<>();
        root.forEach(results::add);
        return results;
    }

    /** Writes result objects as a JMH JSON array, replacing {@code file} atomically. */
    public static void write(Path file, List<JsonNode> results) throws IOException {
        ArrayNode array = MAPPER.createArrayNode();
        results.forEach(array::add);
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        MAPPER.writeValue(tmp.toFile(), array);
        Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    /**
     * {@code existing} with {@code fresh} merged in: a fresh result replaces the existing one with the same
     * key (benchmark and parameters) in place; fresh results with new keys are appended in their order.
     */
    public static List<JsonNode> merge(List<JsonNode> existing, List<JsonNode> fresh) {
        Map<String, JsonNode> byKey = new LinkedHashMap<>();
        existing.forEach(r -> byKey.put(BenchmarkResult.key(r), r));
        fresh.forEach(r -> byKey.put(BenchmarkResult.key(r), r));
        return new ArrayList<>(byKey.values());
    }
}
