package io.vmpage.stress;

import static org.openjdk.jcstress.annotations.Expect.ACCEPTABLE;
import static org.openjdk.jcstress.annotations.Expect.FORBIDDEN;

import org.openjdk.jcstress.annotations.Actor;
import org.openjdk.jcstress.annotations.Arbiter;
import org.openjdk.jcstress.annotations.JCStressTest;
import org.openjdk.jcstress.annotations.Outcome;
import org.openjdk.jcstress.annotations.State;
import org.openjdk.jcstress.infra.results.II_Result;

/**
 * {@code DirtyBitmap.mark} of two frames of one bitmap word (frame A, then frame B, one vCPU) racing
 * with {@code harvestWord} of that word; the arbiter harvests the word again. Each result is the set of
 * frames a harvest took: 1 = A, 2 = B, -1 = a bit nobody marked.
 *
 * <p>Every marked frame must be in exactly one of the two harvests: a mark's CAS lands either before the
 * harvest's get-and-set (taken by it) or after (left for the next one), and a CAS that loses to the
 * get-and-set retries on the zeroed word. Missing from both is a lost dirty page (a migration would skip
 * its newest contents); in both is a double report. A harvest that took B without A is forbidden too:
 * marks and harvests are sequentially consistent atomics on one word, so one that sees the later mark
 * sees the earlier.
 */
@JCStressTest
@Outcome(id = "3, 0", expect = ACCEPTABLE, desc = "both marks before the harvest took the word")
@Outcome(id = "1, 2", expect = ACCEPTABLE, desc = "A marked before the harvest, B after")
@Outcome(id = "0, 3", expect = ACCEPTABLE, desc = "both marks after the harvest (or it read the word as zero)")
@Outcome(id = "2, 1", expect = FORBIDDEN, desc = "harvest saw the second mark but not the first")
@Outcome(expect = FORBIDDEN, desc = "a marked frame lost (in neither harvest) or reported twice, or a stray bit")
@State
public class BitmapMarkHarvestStress {
    private static final int A = 3;
    private static final int B = 45;

    private final int slot = Slots.take();

    @Actor
    public void vcpu() {
        Slots.BITMAP.mark(Slots.frame(slot, A));
        Slots.BITMAP.mark(Slots.frame(slot, B));
    }

    @Actor
    public void harvest(II_Result r) {
        r.r1 = frames(Slots.BITMAP.harvestWord(Slots.word(slot)));
    }

    @Arbiter
    public void harvestAgain(II_Result r) {
        r.r2 = frames(Slots.BITMAP.harvestWord(Slots.word(slot)));
    }

    static int frames(long word) {
        long other = word & ~((1L << A) | (1L << B));
        return other != 0 ? -1 : (int) ((word >>> A) & 1) | (int) ((word >>> B) & 1) << 1;
    }
}
