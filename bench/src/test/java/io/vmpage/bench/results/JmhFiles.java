package io.vmpage.bench.results;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Path;

/** Builds small hand-written files in JMH's JSON result format for the tests. */
final class JmhFiles {
    static final ObjectMapper MAPPER = new ObjectMapper();
    static final String FAKE = FakeBench.class.getName() + ".";

    private final ArrayNode results = MAPPER.createArrayNode();

    /** Adds a result of {@code FakeBench.method}; {@code region} may be null (no params); alloc NaN = no gc metrics. */
    JmhFiles add(String method, String region, double score, double alloc) {
        ObjectNode r = results.addObject();
        r.put("jmhVersion", "1.37");
        r.put("benchmark", FAKE + method);
        r.put("mode", "avgt");
        r.put("threads", 1);
        r.put("forks", RunProfile.QUICK.forks()); // results as './vmpage bench --quick' writes them
        r.put("warmupIterations", RunProfile.QUICK.warmupIterations());
        r.put("warmupTime", RunProfile.QUICK.warmupTime().toString());
        r.put("measurementIterations", RunProfile.QUICK.measurementIterations());
        r.put("measurementTime", RunProfile.QUICK.measurementTime().toString());
        if (region != null) {
            r.putObject("params").put("region", region);
        }
        ObjectNode primary = r.putObject("primaryMetric");
        primary.put("score", score);
        primary.put("scoreError", "NaN");
        primary.put("scoreUnit", "ns/op");
        ObjectNode secondary = r.putObject("secondaryMetrics");
        if (!Double.isNaN(alloc)) {
            ObjectNode norm = secondary.putObject("\u00b7gc.alloc.rate.norm");
            norm.put("score", alloc);
            norm.put("scoreError", 0.0);
            norm.put("scoreUnit", "B/op");
        }
        return this;
    }

    JmhFiles add(String method, String region, double score) {
        return add(method, region, score, 0.0);
    }

    Path write(Path file) throws IOException {
        MAPPER.writeValue(file.toFile(), results);
        return file;
    }
}
