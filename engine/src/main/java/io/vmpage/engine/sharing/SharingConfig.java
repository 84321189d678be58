package io.vmpage.engine.sharing;

/**
 * How fast a {@link PageSharingScanner} scans: guest pages per second picked at random in each VM and in
 * all (ESX 2's defaults: 50 per VM, 200 in all, so scanning costs next to nothing and finds shared pages
 * over minutes), and the seed of the random picks. A rate of 0 lifts that limit (for experiments: the
 * scanner then takes a core).
 *
 * @param pagesPerSecondPerVm pages scanned per second in each VM, 0 = no limit
 * @param pagesPerSecond pages scanned per second in all, 0 = no limit
 * @param seed seed of the random page picks (a run reproduces its picks, not the threads' timing)
 */
public record SharingConfig(double pagesPerSecondPerVm, double pagesPerSecond, long seed) {
    /** ESX 2's scan rates. */
    public static final double ESX_PAGES_PER_SECOND_PER_VM = 50;
    public static final double ESX_PAGES_PER_SECOND = 200;

    public SharingConfig {
        if (!(pagesPerSecondPerVm >= 0) || !(pagesPerSecond >= 0) || Double.isInfinite(pagesPerSecondPerVm) || Double.isInfinite(pagesPerSecond)) {
            throw new IllegalArgumentException("scan rates must be finite and at least 0 pages/s (0 = no limit): "
                + pagesPerSecondPerVm + " per VM, " + pagesPerSecond + " in all");
        }
    }

    /** ESX 2's rates, seed 0. */
    public static SharingConfig defaults() {
        return new SharingConfig(ESX_PAGES_PER_SECOND_PER_VM, ESX_PAGES_PER_SECOND, 0);
    }

    /** No rate limit, seed 0. */
    public static SharingConfig unlimited() {
        return new SharingConfig(0, 0, 0);
    }

    public SharingConfig withRates(double perVm, double total) {
        return new SharingConfig(perVm, total, seed);
    }

    public SharingConfig withSeed(long s) {
        return new SharingConfig(pagesPerSecondPerVm, pagesPerSecond, s);
    }
}
