package io.vmpage.bench.results;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.Locale;
import org.openjdk.jmh.runner.options.TimeValue;

/**
 * The iteration settings of the two ways {@code vmpage bench} runs the suite. JMH records the settings
 * in every result, so the results table can say which command produced each file.
 */
public enum RunProfile {
    /** Default run: enough iterations and two forks for numbers worth committing. */
    FULL("./vmpage bench", 2, 3, TimeValue.seconds(1), 5, TimeValue.seconds(1)),
    /**
     * Smoke run (about 2.5 s per benchmark with fork start and setup, so the whole suite stays under three
     * minutes): checks the suite runs and gives rough ratios. Three measurement iterations, as JMH
     * reports no error for fewer.
     */
    QUICK("./vmpage bench --quick", 1, 1, TimeValue.milliseconds(500), 3, TimeValue.milliseconds(300));

    private final String command;
    private final int forks;
    private final int warmupIterations;
    private final TimeValue warmupTime;
    private final int measurementIterations;
    private final TimeValue measurementTime;

    RunProfile(String command, int forks, int warmupIterations, TimeValue warmupTime,
               int measurementIterations, TimeValue measurementTime) {
        this.command = command;
        this.forks = forks;
        this.warmupIterations = warmupIterations;
        this.warmupTime = warmupTime;
        this.measurementIterations = measurementIterations;
        this.measurementTime = measurementTime;
    }

    public String command() {
        return command;
    }

    public int forks() {
        return forks;
    }

    public int warmupIterations() {
        return warmupIterations;
    }

    public TimeValue warmupTime() {
        return warmupTime;
    }

    public int measurementIterations() {
        return measurementIterations;
    }

    public TimeValue measurementTime() {
        return measurementTime;
    }

    /** Human description of the settings, e.g. {@code 2 forks, warmup 3 x 1 s, measurement 5 x 1 s}. */
    public String settings() {
        return describe(forks, warmupIterations, warmupTime.toString(), measurementIterations,
            measurementTime.toString());
    }

    /**
     * The command that produced a JMH result object: the matching profile's command, or the settings
     * themselves when they match no profile (a hand-run JMH, say).
     */
    public static String commandOf(JsonNode result) {
        int forks = result.path("forks").asInt(-1);
        int wi = result.path("warmupIterations").asInt(-1);
        String wt = result.path("warmupTime").asText("?");
        int mi = result.path("measurementIterations").asInt(-1);
        String mt = result.path("measurementTime").asText("?");
        for (RunProfile p : values()) {
            if (p.forks == forks && p.warmupIterations == wi && p.measurementIterations == mi
                && p.warmupTime.toString().equals(wt) && p.measurementTime.toString().equals(mt)) {
                return p.command;
            }
        }
        return "custom (" + describe(forks, wi, wt, mi, mt) + ")";
    }

    private static String describe(int forks, int wi, String wt, int mi, String mt) {
        return String.format(Locale.ROOT, "%d fork%s, warmup %d x %s, measurement %d x %s",
            forks, forks == 1 ? "" : "s", wi, wt, mi, mt);
    }
}
