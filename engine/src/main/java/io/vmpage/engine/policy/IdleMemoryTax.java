package io.vmpage.engine.policy;

/**
 * ESX's idle memory tax (Waldspurger, OSDI 2002, section 5.2): memory is reclaimed first from the VM with
 * the fewest shares per allocated page, where an idle page costs more than an active one:
 * <pre>
 *   rho = S / (P * (f + k * (1 - f))),   k = 1 / (1 - tau)
 * </pre>
 * with S the VM's shares, P its allocated pages, f its active fraction ({@link WorkingSetSampler}) and
 * tau the tax rate (ESX's default 0.75: an idle page costs 4 times an active one; 0 is pure
 * proportional share).
 */
public final class IdleMemoryTax {
    /** ESX's default tax rate. */
    public static final double ESX_TAU = 0.75;

    private IdleMemoryTax() {
    }

    /**
     * The shares-per-page ratio rho of a VM.
     *
     * @throws IllegalArgumentException when {@code tau} is outside [0, 1), {@code active} outside [0, 1],
     *     {@code shares} negative or {@code pages} negative
     */
    public static double sharesPerPage(double shares, long pages, double active, double tau) {
        check(tau);
        if (!(active >= 0 && active <= 1)) {
            throw new IllegalArgumentException("active fraction " + active + " must be between 0 and 1");
        }
        if (!(shares >= 0) || pages < 0) {
            throw new IllegalArgumentException("shares " + shares + " and pages " + pages + " must not be negative");
        }
        if (pages == 0) {
            return Double.POSITIVE_INFINITY; // nothing to reclaim
        }
        double k = 1 / (1 - tau);
        return shares / (pages * (active + k * (1 - active)));
    }

    /**
     * Which VM memory is reclaimed from: the index of the lowest rho (the first of equal ones), -1 when
     * none has pages.
     */
    public static int victim(double[] shares, long[] pages, double[] active, double tau) {
        if (shares.length != pages.length || pages.length != active.length) {
            throw new IllegalArgumentException("one share count, page count and active fraction per VM");
        }
        int lowest = -1;
        double min = Double.POSITIVE_INFINITY;
        for (int i = 0; i < shares.length; i++) {
            double rho = sharesPerPage(shares[i], pages[i], active[i], tau);
            if (rho < min) {
                min = rho;
                lowest = i;
            }
        }
        return lowest;
    }

    private static void check(double tau) {
        if (!(tau >= 0 && tau < 1)) {
            throw new IllegalArgumentException("idle memory tax rate " + tau + " must be at least 0 and below 1");
        }
    }
}
