package io.vmpage.engine.policy;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

/** The idle memory tax formula, and whom it makes the victim. */
class IdleMemoryTaxTest {
    @Test
    void withoutTaxSharesPerPageIgnoresActivityAndWithEsxsTaxAnIdlePageCostsFourActiveOnes() {
        assertEquals(0.01, IdleMemoryTax.sharesPerPage(1000, 100_000, 0.0, 0), 1e-12);
        assertEquals(0.01, IdleMemoryTax.sharesPerPage(1000, 100_000, 1.0, 0), 1e-12);
        assertEquals(0.01, IdleMemoryTax.sharesPerPage(1000, 100_000, 1.0, IdleMemoryTax.ESX_TAU), 1e-12);
        assertEquals(0.0025, IdleMemoryTax.sharesPerPage(1000, 100_000, 0.0, IdleMemoryTax.ESX_TAU), 1e-12);
        // half active at tau 0.75: P * (0.5 + 4 * 0.5) = 2.5 P
        assertEquals(1000 / (100_000 * 2.5), IdleMemoryTax.sharesPerPage(1000, 100_000, 0.5, IdleMemoryTax.ESX_TAU), 1e-12);
        assertEquals(Double.POSITIVE_INFINITY, IdleMemoryTax.sharesPerPage(1000, 0, 0.5, 0.5));
    }

    /** The paper's Figure 7 set-up: equal shares and memory, one VM idle, one active. */
    @Test
    void theIdleVmIsTheVictimOnceIdlePagesAreTaxed() {
        double[] shares = {1000, 1000};
        long[] pages = {65536, 65536};
        double[] active = {0.05, 0.9}; // idle, active
        assertEquals(0, IdleMemoryTax.victim(shares, pages, active, IdleMemoryTax.ESX_TAU));
        assertEquals(0, IdleMemoryTax.victim(shares, pages, active, 0), "a tie without the tax: the first");
        long[] idleSmaller = {40_000, 65536};
        assertEquals(1, IdleMemoryTax.victim(shares, idleSmaller, active, 0), "without the tax: whoever has more pages");
        assertEquals(0, IdleMemoryTax.victim(shares, idleSmaller, active, IdleMemoryTax.ESX_TAU), "with it: still the idle one");
        assertEquals(-1, IdleMemoryTax.victim(new double[] {1}, new long[] {0}, new double[] {1}, 0));
    }

    @Test
    void badInputsAreRefused() {
        assertThrows(IllegalArgumentException.class, () -> IdleMemoryTax.sharesPerPage(1, 1, 0.5, 1.0));
        assertThrows(IllegalArgumentException.class, () -> IdleMemoryTax.sharesPerPage(1, 1, 0.5, -0.1));
        assertThrows(IllegalArgumentException.class, () -> IdleMemoryTax.sharesPerPage(1, 1, 1.5, 0.5));
        assertThrows(IllegalArgumentException.class, () -> IdleMemoryTax.sharesPerPage(1, 1, Double.NaN, 0.5));
        assertThrows(IllegalArgumentException.class, () -> IdleMemoryTax.sharesPerPage(-1, 1, 0.5, 0.5));
        assertThrows(IllegalArgumentException.class, () -> IdleMemoryTax.victim(new double[1], new long[2], new double[1], 0));
    }
}
