package io.vmpage.bench.results;

import io.vmpage.bench.jmh.Baseline;
import java.lang.reflect.Method;
import java.util.HashMap;
import java.util.Map;
import java.util.Optional;

/**
 * Which benchmark is whose in-run baseline, read reflectively from {@link Baseline} annotations on the
 * benchmark classes. A class that cannot be loaded (a benchmark since removed) has no baselines.
 */
public final class Baselines {
    private final ClassLoader loader;
    /** Class name to (method name to the baseline method it names). */
    private final Map<String, Map<String, String>> byClass = new HashMap<>();

    public Baselines(ClassLoader loader) {
        this.loader = loader;
    }

    /** Baselines of the benchmark classes visible to this class's loader (the jar's). */
    public static Baselines fromClasspath() {
        return new Baselines(Baselines.class.getClassLoader());
    }

    /** The baseline method named by {@code method}'s {@link Baseline} annotation, if any. */
    public Optional<String> baselineOf(String className, String method) {
        return Optional.ofNullable(annotations(className).get(method));
    }

    /** True when some benchmark of the class names {@code method} as its baseline. */
    public boolean isBaseline(String className, String method) {
        return annotations(className).containsValue(method);
    }

    private Map<String, String> annotations(String className) {
        return byClass.computeIfAbsent(className, this::scan);
    }

    private Map<String, String> scan(String className) {
        Map<String, String> baselines = new HashMap<>();
        try {
            for (Method m : Class.forName(className, false, loader).getMethods()) {
                Baseline b = m.getAnnotation(Baseline.class);
                if (b != null) {
                    baselines.put(m.getName(), b.value());
                }
            }
        } catch (ClassNotFoundException | LinkageError e) {
            return Map.of();
        }
        return baselines;
    }
}
