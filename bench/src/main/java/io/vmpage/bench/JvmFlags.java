package io.vmpage.bench;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The JVM flags vmpage needs (module exports and opens for Agrona's {@code UnsafeApi} and Chronicle), as
 * filtered into the jar from the parent POM's {@code vmpage.jvm.flags} properties. Anything that starts
 * another JVM (JMH forks) passes these on.
 *
 * <p>Resource format: the first line holds the flags for every JDK; a later line {@code jdkN+ FLAGS}
 * holds flags only JDK N and newer accept (the {@code ./vmpage} launcher reads it the same way).
 */
public final class JvmFlags {
    /** Classpath resource holding the flags. */
    public static final String RESOURCE = "/io/vmpage/bench/jvm-flags.txt";
    private static final Pattern FROM_JDK = Pattern.compile("jdk(\\d+)\\+(?:\\s+(.*))?");

    private JvmFlags() {
    }

    /** The flags for the running JDK, in order; never empty in a correctly built jar. */
    public static List<String> get() {
        return forJdk(read(), Runtime.version().feature());
    }

    /** The flags in resource text {@code text} that apply to JDK {@code feature}. */
    static List<String> forJdk(String text, int feature) {
        if (text.isBlank() || text.contains("${")) {
            throw new IllegalStateException("resource " + RESOURCE + " was not filtered by the build: '"
                + text.strip() + "'");
        }
        String[] lines = text.strip().split("\\R");
        List<String> flags = new ArrayList<>(words(lines[0]));
        for (int i = 1; i < lines.length; i++) {
            Matcher m = FROM_JDK.matcher(lines[i].strip());
            if (m.matches() && feature >= Integer.parseInt(m.group(1)) && m.group(2) != null) {
                flags.addAll(words(m.group(2)));
            }
        }
        return List.copyOf(flags);
    }

    private static List<String> words(String line) {
        String s = line.strip();
        return s.isEmpty() ? List.of() : List.of(s.split("\\s+"));
    }

    private static String read() {
        try (InputStream in = JvmFlags.class.getResourceAsStream(RESOURCE)) {
            if (in == null) {
                throw new IllegalStateException("resource " + RESOURCE + " is missing from the classpath");
            }
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + RESOURCE, e);
        }
    }
}
