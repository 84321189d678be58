package io.vmpage.bench.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Sizes and addresses: values as typed in every error, overflow reported rather than wrapped. */
class UnitsTest {
    @ParameterizedTest
    @CsvSource({"4096, 4096", "64k, 65536", "512m, 536870912", "16g, 17179869184", "1t, 1099511627776",
        "8MiB, 8388608", "2GB, 2147483648", "' 3k ', 3072", "+4k, 4096", "8388607t, 9223370937343148032",
        "9223372036854775807, 9223372036854775807"})
    void sizes(String text, long bytes) {
        assertEquals(bytes, Units.parseSize(text));
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
        "8388608t|size '8388608t' is too large (more than 2^63-1 bytes)",
        "8000000000000000000000t|size '8000000000000000000000t' is too large (more than 2^63-1 bytes)",
        "9223372036854775808|size '9223372036854775808' is too large (more than 2^63-1 bytes)",
        "-1g|size '-1g' is negative",
        "1.5g|size '1.5g' is not a size (a whole number with an optional k, m, g or t suffix)",
        "0x10|size '0x10' is not a size (a whole number with an optional k, m, g or t suffix)",
        "g|size 'g' is not a size (a whole number with an optional k, m, g or t suffix)"})
    void badSizesNameTheTextAsTyped(String text, String message) {
        assertEquals(message, assertThrows(IllegalArgumentException.class, () -> Units.parseSize(text)).getMessage());
    }

    @Test
    void optionSizesNameTheOptionTheValueAsTypedAndTheRange() {
        long min = 16L << 20;
        long max = 256L << 30;
        assertEquals(1L << 30, Units.parseSize("--memory", "1g", min, max));
        assertEquals("--memory 8000000t is out of range: expected a size from 16m to 256g",
            assertThrows(IllegalArgumentException.class, () -> Units.parseSize("--memory", "8000000t", min, max))
                .getMessage());
        assertEquals("--memory 9000000t is too large (more than 2^63-1 bytes); expected a size from 16m to 256g",
            assertThrows(IllegalArgumentException.class, () -> Units.parseSize("--memory", "9000000t", min, max))
                .getMessage());
        assertEquals("--memory -64m is negative; expected a size from 16m to 256g",
            assertThrows(IllegalArgumentException.class, () -> Units.parseSize("--memory", "-64m", min, max))
                .getMessage());
        assertEquals("--memory 4k is out of range: expected a size from 16m to 256g",
            assertThrows(IllegalArgumentException.class, () -> Units.parseSize("--memory", "4k", min, max))
                .getMessage());
    }

    @Test
    void formatSizeIsTheShortestExactSpelling() {
        assertEquals("16m", Units.formatSize(16L << 20));
        assertEquals("256g", Units.formatSize(256L << 30));
        assertEquals("4k", Units.formatSize(4096));
        assertEquals("2t", Units.formatSize(2L << 40));
        assertEquals("4097", Units.formatSize(4097));
        assertEquals("1025k", Units.formatSize(1025L << 10));
    }

    @Test
    void addressesBeyond64BitsAreReportedAsSuch() {
        assertEquals(-1L, Units.parseAddress("0xffffffffffffffff"));
        assertEquals(-1L, Units.parseAddress("18446744073709551615"));
        assertEquals("address '0x1ffffffffffffffff' does not fit in 64 bits",
            assertThrows(IllegalArgumentException.class, () -> Units.parseAddress("0x1ffffffffffffffff")).getMessage());
        assertEquals("address '18446744073709551616' does not fit in 64 bits",
            assertThrows(IllegalArgumentException.class, () -> Units.parseAddress("18446744073709551616")).getMessage());
        assertEquals("address '-1' is negative (addresses are unsigned)",
            assertThrows(IllegalArgumentException.class, () -> Units.parseAddress("-1")).getMessage());
        assertEquals("address '0xzz' is not a number (decimal or 0x-prefixed hex)",
            assertThrows(IllegalArgumentException.class, () -> Units.parseAddress("0xzz")).getMessage());
    }
}
