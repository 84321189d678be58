package io.vmpage.engine.policy;

import io.vmpage.engine.Vm;
import io.vmpage.engine.memory.P2mEntry;
import java.util.SplittableRandom;

/**
 * ESX's statistical working-set estimate (Waldspurger, OSDI 2002, section 5.3): each sampling period,
 * {@code n} random guest pages are invalidated ({@link Vm#unmapForSampling}: their mappings go, so the
 * guest's next touch of each exits and maps it again); at the end of the period the fraction touched,
 * {@code f = t / n}, is folded into a fast and a slow exponentially weighted moving average, and the
 * estimate is the larger of the two: it rises as soon as the guest gets busier, and falls only slowly
 * when it idles (the paper's aim: respond rapidly to increases, gradually to decreases). ESX samples 100
 * pages per 30 s period; the period is the caller's clock, so experiments may run it faster.
 *
 * <p>Before the first period ends the estimate is 1 (every page presumed active: nothing is taxed on no
 * evidence). Not thread-safe: one policy thread drives a sampler.
 */
public final class WorkingSetSampler {
    /** ESX's sample size per period. */
    public static final int ESX_SAMPLES = 100;
    /** Weight of a new period in the fast average (half of it each period). */
    static final double FAST_WEIGHT = 0.5;
    /** Weight of a new period in the slow average. */
    static final double SLOW_WEIGHT = 0.125;

    private final Vm vm;
    private final int samples;
    private final SplittableRandom random;
    private final long[] sampled;
    private int count;
    private double fast = Double.NaN;
    private double slow = Double.NaN;
    private double last = Double.NaN;

    /**
     * A sampler of {@code samples} pages per period on {@code vm}, picking pages with {@code seed}.
     *
     * @throws IllegalArgumentException when {@code samples} is not positive
     */
    public WorkingSetSampler(Vm vm, int samples, long seed) {
        if (samples < 1) {
            throw new IllegalArgumentException("working-set sampling needs at least 1 page per period, not " + samples);
        }
        this.vm = vm;
        this.samples = samples;
        this.random = new SplittableRandom(seed);
        this.sampled = new long[samples];
    }

    /**
     * Starts a period: picks up to {@code samples} random pages among the VM's populated private frames
     * (trying at most 16 random frames per sample, so a sparse guest gets fewer) and invalidates each; a
     * page still unmapped since an earlier period (not touched since) counts as it is. Returns how many
     * it sampled.
     */
    public int startPeriod() {
        count = 0;
        long frames = vm.physicalMap().frames();
        for (int tries = 0; count < samples && tries < samples * 16; tries++) {
            long gfn = random.nextLong(frames);
            long e = vm.physicalMap().entry(gfn);
            if (P2mEntry.isPresent(e) && P2mEntry.kind(e) == P2mEntry.PRIVATE && !contains(gfn)) {
                if (!vm.unmapForSampling(gfn) && vm.mappedForGuest(gfn)) {
                    continue; // the engine keeps it mapped (a shadowed guest table): it cannot be sampled
                }
                sampled[count++] = gfn; // unmapped now, or still unmapped since an earlier period: a sample

            }
        }
        return count;
    }

    private boolean contains(long gfn) {
        for (int i = 0; i < count; i++) {
            if (sampled[i] == gfn) {
                return true;
            }
        }
        return false;
    }

    /**
     * Ends the period: the fraction of the sampled pages the guest touched since {@link #startPeriod},
     * folded into the averages. NaN (averages unchanged) when the period sampled no page.
     */
    public double endPeriod() {
        if (count == 0) {
            return Double.NaN;
        }
        int touched = 0;
        for (int i = 0; i < count; i++) {
            if (vm.mappedForGuest(sampled[i])) {
                touched++;
            }
        }
        double f = (double) touched / count;
        fast = Double.isNaN(fast) ? f : fast + FAST_WEIGHT * (f - fast);
        slow = Double.isNaN(slow) ? f : slow + SLOW_WEIGHT * (f - slow);
        last = f;
        count = 0;
        return f;
    }

    /** The active fraction estimate: max(fast average, slow average); 1 before the first period ended. */
    public double estimate() {
        return Double.isNaN(fast) ? 1.0 : Math.max(fast, slow);
    }

    /** The last period's fraction, NaN before one ended. */
    public double lastSample() {
        return last;
    }
}
