package io.vmpage.engine.policy;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
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

    /**
     * Targets: every VM at the same rho, within its min and max. Equal shares without the tax divide
     * memory evenly; with ESX's tax an idle VM's pages weigh four times an active one's; a clamp hands
     * what it frees or takes to the others; mins that do not fit leave every VM at its min.
     */
    @Test
    void targetsGiveEveryVmTheSameSharesPerPageWithinItsMinAndMax() {
        double[] shares = {1000, 1000};
        long[] min = {0, 0};
        long[] max = {100_000, 100_000};
        double[] idleActive = {0.0, 1.0};
        assertArrayEquals(new long[] {25_000, 25_000}, IdleMemoryTax.targets(shares, idleActive, min, max, 50_000, 0));
        assertArrayEquals(new long[] {10_000, 40_000},
            IdleMemoryTax.targets(shares, idleActive, min, max, 50_000, IdleMemoryTax.ESX_TAU), "1 : 4");
        long[] t = IdleMemoryTax.targets(shares, idleActive, min, max, 50_000, IdleMemoryTax.ESX_TAU);
        assertEquals(IdleMemoryTax.sharesPerPage(1000, t[0], 0.0, IdleMemoryTax.ESX_TAU),
            IdleMemoryTax.sharesPerPage(1000, t[1], 1.0, IdleMemoryTax.ESX_TAU), 1e-12, "the same rho");
        assertArrayEquals(new long[] {15_000, 35_000}, IdleMemoryTax.targets(shares, idleActive, new long[] {15_000, 0},
            max, 50_000, IdleMemoryTax.ESX_TAU), "the idle VM's min holds; the rest is the active one's");
        assertArrayEquals(new long[] {20_000, 30_000}, IdleMemoryTax.targets(shares, idleActive, min,
            new long[] {100_000, 30_000}, 50_000, IdleMemoryTax.ESX_TAU), "the active VM's max holds; the rest is the idle one's");
        assertArrayEquals(new long[] {30_000, 30_000}, IdleMemoryTax.targets(shares, idleActive,
            new long[] {30_000, 30_000}, max, 50_000, 0), "mins that do not fit: every VM at its min");
        double[] threeShares = {500, 1000, 1000};
        double[] allActive = {1, 1, 1};
        assertArrayEquals(new long[] {10_000, 20_000, 20_000}, IdleMemoryTax.targets(threeShares, allActive, new long[3],
            new long[] {99_999, 99_999, 99_999}, 50_000, 0), "by shares");
        assertArrayEquals(new long[] {9, 24_995, 24_995}, IdleMemoryTax.targets(threeShares, allActive, new long[3],
            new long[] {9, 99_999, 99_999}, 50_000, 0), "a VM of 9 pages at most: the others divide the rest");
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
