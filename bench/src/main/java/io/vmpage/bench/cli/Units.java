package io.vmpage.bench.cli;

import java.util.Locale;

/**
 * Parsing of the CLI's sizes ({@code 4096}, {@code 64k}, {@code 512m}, {@code 16g}; binary multiples),
 * rates (the same, per second, optional {@code /s}) and durations ({@code 250ms}, {@code 3s}).
 * Errors name the value and what was expected.
 */
public final class Units {
    private Units() {
    }

    /** Bytes for a size such as {@code 512m}. */
    public static long parseSize(String text) {
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
        long value;
        try {
            value = Long.parseLong(digits);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("size '" + text + "' is not a number with an optional k/m/g suffix");
        }
        if (value < 0 || (shift > 0 && value > (Long.MAX_VALUE >> shift))) {
            throw new IllegalArgumentException("size '" + text + "' is out of range");
        }
        return value << shift;
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

    /** Parses a 64-bit address or number: decimal, or hex with 0x. */
    public static long parseAddress(String text) {
        String s = text == null ? "" : text.strip().replace("_", "");
        try {
            if (s.startsWith("0x") || s.startsWith("0X")) {
                return Long.parseUnsignedLong(s.substring(2), 16);
            }
            return Long.parseUnsignedLong(s);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("address '" + text + "' is not a number (decimal or 0x-prefixed hex)");
        }
    }

    /** "0x" + lower-case hex. */
    public static String hex(long v) {
        return "0x" + Long.toHexString(v);
    }
}
