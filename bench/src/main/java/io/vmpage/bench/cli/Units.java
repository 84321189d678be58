package io.vmpage.bench.cli;

import java.util.Locale;

/**
 * Parsing of the CLI's sizes ({@code 4096}, {@code 64k}, {@code 512m}, {@code 16g}, {@code 1t}; binary multiples),
 * rates (the same, per second, optional {@code /s}) and durations ({@code 250ms}, {@code 3s}).
 * Errors name the value and what was expected.
 */
public final class Units {
    private Units() {
    }

    /**
     * Bytes for a size such as {@code 512m}: a non-negative whole number with an optional {@code k},
     * {@code m}, {@code g} or {@code t} suffix (binary multiples; {@code KiB}, {@code MB} and the like are
     * accepted too). The error names the text as given and why it is not a size; a value beyond
     * {@link Long#MAX_VALUE} bytes, with or without a suffix, is reported as such, never wrapped.
     */
    public static long parseSize(String text) {
        long[] value = new long[1];
        String problem = sizeProblem(text, value);
        if (problem != null) {
            throw new IllegalArgumentException("size '" + text + "' " + problem);
        }
        return value[0];
    }

    /**
     * {@link #parseSize} for the value of {@code option}, which must lie in [{@code min}, {@code max}]. Every
     * error is one line naming the option and the value as the user typed it, and the range expected.
     */
    public static long parseSize(String option, String text, long min, long max) {
        long[] value = new long[1];
        String problem = sizeProblem(text, value);
        String expected = "expected a size from " + formatSize(min) + " to " + formatSize(max);
        if (problem != null) {
            throw new IllegalArgumentException(option + " " + text + " " + problem + "; " + expected);
        }
        if (value[0] < min || value[0] > max) {
            throw new IllegalArgumentException(option + " " + text + " is out of range: " + expected);
        }
        return value[0];
    }

    /** Why {@code text} is not a size, or null after storing its value in {@code value[0]}. */
    private static String sizeProblem(String text, long[] value) {
        String s = text == null ? "" : text.strip().toLowerCase(Locale.ROOT);
        if (s.endsWith("ib")) {
            s = s.substring(0, s.length() - 2);
        } else if (s.endsWith("b") && s.length() > 1 && !Character.isDigit(s.charAt(s.length() - 2))) {
            s = s.substring(0, s.length() - 1);
        }
        int shift = 0;
        if (!s.isEmpty()) {
            switch (s.charAt(s.length() - 1)) {
                case 'k': shift = 10; break;
                case 'm': shift = 20; break;
                case 'g': shift = 30; break;
                case 't': shift = 40; break;
                default: break;
            }
        }
        String digits = shift == 0 ? s : s.substring(0, s.length() - 1);
        if (digits.startsWith("+")) {
            digits = digits.substring(1);
        }
        boolean negative = digits.startsWith("-");
        String magnitude = negative ? digits.substring(1) : digits;
        if (magnitude.isEmpty() || !magnitude.chars().allMatch(c -> c >= '0' && c <= '9')) {
            return "is not a size (a whole number with an optional k, m, g or t suffix)";
        }
        if (negative && !magnitude.chars().allMatch(c -> c == '0')) {
            return "is negative";
        }
        long v;
        try {
            v = Long.parseLong(magnitude);
        } catch (NumberFormatException tooManyDigits) {
            return "is too large (more than 2^63-1 bytes)";
        }
        if (v > (Long.MAX_VALUE >> shift)) {
            return "is too large (more than 2^63-1 bytes)";
        }
        value[0] = v << shift;
        return null;
    }

    /** The shortest exact spelling of a size in {@link #parseSize}'s syntax: {@code 16m}, {@code 1g}, {@code 4097}. */
    public static String formatSize(long bytes) {
        String[] suffixes = {"t", "g", "m", "k"};
        int[] shifts = {40, 30, 20, 10};
        for (int i = 0; i < shifts.length; i++) {
            long unit = 1L << shifts[i];
            if (bytes != 0 && bytes % unit == 0) {
                return (bytes / unit) + suffixes[i];
            }
        }
        return Long.toString(bytes);
    }

    /** Bytes per second for a rate such as {@code 128m} or {@code 128m/s}. */
    public static long parseRate(String text) {
        String s = text == null ? "" : text.strip();
        if (s.toLowerCase(Locale.ROOT).endsWith("/s")) {
            s = s.substring(0, s.length() - 2);
        }
        try {
            return parseSize(s);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("rate '" + text + "' is not a size per second such as 128m or 128m/s");
        }
    }

    /** Nanoseconds for a duration such as {@code 300ms}, {@code 2s}, {@code 500us}. */
    public static long parseDurationNanos(String text) {
        String s = text == null ? "" : text.strip().toLowerCase(Locale.ROOT);
        long unit;
        String digits;
        if (s.endsWith("ms")) {
            unit = 1_000_000L;
            digits = s.substring(0, s.length() - 2);
        } else if (s.endsWith("us")) {
            unit = 1_000L;
            digits = s.substring(0, s.length() - 2);
        } else if (s.endsWith("ns")) {
            unit = 1L;
            digits = s.substring(0, s.length() - 2);
        } else if (s.endsWith("s")) {
            unit = 1_000_000_000L;
            digits = s.substring(0, s.length() - 1);
        } else if (s.endsWith("m")) {
            unit = 60_000_000_000L;
            digits = s.substring(0, s.length() - 1);
        } else {
            throw new IllegalArgumentException("duration '" + text + "' needs a unit: ms or s (e.g. 300ms, 2s)");
        }
        try {
            long v = Long.parseLong(digits);
            if (v < 0) {
                throw new NumberFormatException();
            }
            return Math.multiplyExact(v, unit);
        } catch (NumberFormatException | ArithmeticException e) {
            throw new IllegalArgumentException("duration '" + text + "' is not a non-negative whole number with ms or s");
        }
    }

    /** Parses a 64-bit address or number: decimal, or hex with 0x; an unsigned value beyond 64 bits is an error. */
    public static long parseAddress(String text) {
        String s = text == null ? "" : text.strip().replace("_", "");
        boolean hex = s.startsWith("0x") || s.startsWith("0X");
        String digits = hex ? s.substring(2) : s;
        try {
            return Long.parseUnsignedLong(digits, hex ? 16 : 10);
        } catch (NumberFormatException e) {
            int radix = hex ? 16 : 10;
            boolean allDigits = !digits.isEmpty() && digits.chars().allMatch(c -> Character.digit(c, radix) >= 0);
            if (allDigits) {
                throw new IllegalArgumentException("address '" + text + "' does not fit in 64 bits");
            }
            if (digits.startsWith("-")) {
                throw new IllegalArgumentException("address '" + text + "' is negative (addresses are unsigned)");
            }
            throw new IllegalArgumentException("address '" + text + "' is not a number (decimal or 0x-prefixed hex)");
        }
    }

    /** "0x" + lower-case hex. */
    public static String hex(long v) {
        return "0x" + Long.toHexString(v);
    }
}
