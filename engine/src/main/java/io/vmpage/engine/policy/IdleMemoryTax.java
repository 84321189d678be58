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

    /**
     * The target allocation of each VM when {@code available} pages are divided among them: what
     * reclaiming always from the lowest rho converges to, every VM at the same rho, so each VM's share is
     * proportional to {@code S / (f + k (1 - f))}, clamped to [{@code min}, {@code max}] with what a clamp
     * frees or takes divided among the others (water-filling). A target is an entitlement, not a demand: a
     * VM below its target is not reclaimed, one above it is. When even the mins do not fit, every target
     * is its min.
     *
     * @throws IllegalArgumentException when the arrays differ in length, or a value is out of range
     */
    public static long[] targets(double[] shares, double[] active, long[] min, long[] max, long available, double tau) {
        int n = shares.length;
        if (active.length != n || min.length != n || max.length != n) {
            throw new IllegalArgumentException("one share count, active fraction, min and max per VM");
        }
        check(tau);
        double k = 1 / (1 - tau);
        long[] target = new long[n];
        boolean[] fixed = new boolean[n];
        long remaining = available;
        for (int i = 0; i < n; i++) {
            sharesPerPage(shares[i], 1, active[i], tau); // checks the values
            if (min[i] < 0 || max[i] < min[i]) {
                throw new IllegalArgumentException("VM " + i + ": min " + min[i] + " and max " + max[i] + " pages");
            }
        }
        for (int pass = 0; pass <= n; pass++) {
            double weights = 0;
            for (int i = 0; i < n; i++) {
                if (!fixed[i]) {
                    weights += shares[i] / (active[i] + k * (1 - active[i]));
                }
            }
            boolean changed = false;
            for (int i = 0; i < n && weights > 0; i++) { // below its min: it gets its min, the rest is divided again
                if (!fixed[i] && share(shares[i], active[i], k, weights, remaining) < min[i]) {
                    target[i] = min[i];
                    fixed[i] = true;
                    changed = true;
                }
            }
            if (!changed) {
                for (int i = 0; i < n && weights > 0; i++) { // above its max: that is its target
                    if (!fixed[i] && share(shares[i], active[i], k, weights, remaining) > max[i]) {
                        target[i] = max[i];
                        fixed[i] = true;
                        changed = true;
                    }
                }
            }
            if (!changed) {
                for (int i = 0; i < n; i++) {
                    if (!fixed[i]) {
                        target[i] = weights > 0 ? (long) share(shares[i], active[i], k, weights, remaining) : min[i];
                    }
                }
                return target;
            }
            remaining = available;
            for (int i = 0; i < n; i++) {
                if (fixed[i]) {
                    remaining -= target[i];
                }
            }
            remaining = Math.max(0, remaining);
        }
        return target; // every VM fixed
    }

    private static double share(double shares, double active, double k, double weights, long available) {
        return available * (shares / (active + k * (1 - active))) / weights;
    }

    private static void check(double tau) {
        if (!(tau >= 0 && tau < 1)) {
            throw new IllegalArgumentException("idle memory tax rate " + tau + " must be at least 0 and below 1");
        }
    }
}
