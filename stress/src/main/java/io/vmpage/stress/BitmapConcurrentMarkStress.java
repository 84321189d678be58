package io.vmpage.stress;

import static org.openjdk.jcstress.annotations.Expect.ACCEPTABLE;
import static org.openjdk.jcstress.annotations.Expect.FORBIDDEN;

import org.openjdk.jcstress.annotations.Actor;
import org.openjdk.jcstress.annotations.Arbiter;
import org.openjdk.jcstress.annotations.JCStressTest;
import org.openjdk.jcstress.annotations.Outcome;
import org.openjdk.jcstress.annotations.State;
import org.openjdk.jcstress.infra.results.ZZI_Result;

/**
 * Two vCPUs marking different frames (A, B) of one bitmap word at once; the arbiter harvests the word.
 * Results: (first mark returned true, second mark returned true, frames harvested: 1 = A, 2 = B).
 *
 * <p>Both marks find their bit clear, so both must report that they set it, and the harvest must hold
 * both frames. A frame missing is a lost update of the word (a plain read-modify-write instead of the
 * CAS loop, or a CAS failure not retried): forbidden, the page would never be re-sent.
 */
@JCStressTest
@Outcome(id = "true, true, 3", expect = ACCEPTABLE, desc = "both marks set their bit, the harvest takes both")
@Outcome(expect = FORBIDDEN, desc = "a mark lost (overwritten by the other) or claimed to find its bit set")
@State
public class BitmapConcurrentMarkStress {
    private static final int A = 3;
    private static final int B = 45;

    private final int slot = Slots.take();

    @Actor
    public void vcpu1(ZZI_Result r) {
        r.r1 = Slots.BITMAP.mark(Slots.frame(slot, A));
    }

    @Actor
    public void vcpu2(ZZI_Result r) {
        r.r2 = Slots.BITMAP.mark(Slots.frame(slot, B));
    }

    @Arbiter
    public void harvest(ZZI_Result r) {
        r.r3 = BitmapMarkHarvestStress.frames(Slots.BITMAP.harvestWord(Slots.word(slot)));
    }
}
