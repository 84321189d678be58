package io.vmpage.stress;

import static org.openjdk.jcstress.annotations.Expect.ACCEPTABLE;
import static org.openjdk.jcstress.annotations.Expect.FORBIDDEN;

import org.openjdk.jcstress.annotations.Actor;
import org.openjdk.jcstress.annotations.Arbiter;
import org.openjdk.jcstress.annotations.JCStressTest;
import org.openjdk.jcstress.annotations.Outcome;
import org.openjdk.jcstress.annotations.State;
import org.openjdk.jcstress.infra.results.ZZZ_Result;

/**
 * Two vCPUs marking the same frame at once (two writes to one page); the arbiter harvests. Results:
 * (first mark returned true, second mark returned true, the harvest took the frame).
 *
 * <p>{@code mark} is test-before-set with a CAS: exactly one of the two sets the bit, the other finds it
 * set (or loses the CAS, re-reads and finds it set). Both claiming the set would double-count the page;
 * neither, or the bit missing from the harvest, would lose it.
 */
@JCStressTest
@Outcome(id = {"true, false, true", "false, true, true"}, expect = ACCEPTABLE,
    desc = "one mark set the bit, the other found it set; the harvest takes the frame")
@Outcome(expect = FORBIDDEN, desc = "both or neither claimed the set, or the frame is not in the harvest")
@State
public class BitmapSameFrameStress {
    private final int slot = Slots.take();
    private final long gfn = Slots.frame(slot, 17);

    @Actor
    public void vcpu1(ZZZ_Result r) {
        r.r1 = Slots.BITMAP.mark(gfn);
    }

    @Actor
    public void vcpu2(ZZZ_Result r) {
        r.r2 = Slots.BITMAP.mark(gfn);
    }

    @Arbiter
    public void harvest(ZZZ_Result r) {
        r.r3 = Slots.BITMAP.harvestWord(Slots.word(slot)) == 1L << 17;
    }
}
