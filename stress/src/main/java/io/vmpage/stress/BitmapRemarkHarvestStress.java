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
 * A vCPU writing an already-dirty page again ({@code mark} of a frame whose bit is set, the fast path that
 * returns without an atomic) racing with {@code harvestWord}; the arbiter harvests again. Results:
 * (mark returned true, the harvest took the frame, the arbiter's harvest took it).
 *
 * <p>The harvest always takes the earlier write's bit. If the mark read the bit set it ran before the
 * harvest and its write is covered by it: the frame must not show up again. If it read the bit clear it
 * ran after the harvest and set it: the next harvest must take it. A mark that returned early after the
 * harvest (a stale read of the bit) would lose the write: forbidden.
 */
@JCStressTest
@Outcome(id = "false, true, false", expect = ACCEPTABLE, desc = "mark before the harvest: found the bit set, the harvest covers both writes")
@Outcome(id = "true, true, true", expect = ACCEPTABLE, desc = "mark after the harvest: set the bit again for the next harvest")
@Outcome(id = "false, true, true", expect = FORBIDDEN, desc = "mark found the bit set, yet it reappeared after the harvest")
@Outcome(id = "true, true, false", expect = FORBIDDEN, desc = "LOST WRITE: mark set the bit after the harvest, next harvest misses it")
@Outcome(expect = FORBIDDEN, desc = "the harvest missed the earlier write's bit")
@State
public class BitmapRemarkHarvestStress {
    private final int slot = Slots.take();
    private final long gfn = Slots.frame(slot, 50);

    public BitmapRemarkHarvestStress() {
        Slots.BITMAP.mark(gfn);
    }

    @Actor
    public void vcpu(ZZZ_Result r) {
        r.r1 = Slots.BITMAP.mark(gfn);
    }

    @Actor
    public void harvest(ZZZ_Result r) {
        r.r2 = taken(Slots.BITMAP.harvestWord(Slots.word(slot)));
    }

    @Arbiter
    public void harvestAgain(ZZZ_Result r) {
        r.r3 = taken(Slots.BITMAP.harvestWord(Slots.word(slot)));
    }

    private boolean taken(long word) {
        return word == 1L << (gfn & 63);
    }
}
