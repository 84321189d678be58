package io.vmpage.stress;

import static org.openjdk.jcstress.annotations.Expect.ACCEPTABLE;
import static org.openjdk.jcstress.annotations.Expect.FORBIDDEN;

import io.vmpage.engine.paging.nested.EptLeaf;
import io.vmpage.mmu.Ept;
import org.openjdk.jcstress.annotations.Actor;
import org.openjdk.jcstress.annotations.Arbiter;
import org.openjdk.jcstress.annotations.JCStressTest;
import org.openjdk.jcstress.annotations.Outcome;
import org.openjdk.jcstress.annotations.State;
import org.openjdk.jcstress.infra.results.ZZZ_Result;

/**
 * Nested paging's write-protect protocol on the production code: a write fault on a write-protected EPT
 * leaf (what {@code NestedPaging.grantWrite} does: {@link EptLeaf#change} from the read-only leaf to the
 * writable one, which CASes and then logs the frame in the dirty log) racing with a dirty-log harvest
 * (take the bitmap word, then {@link EptLeaf#clearBits} W, as {@code NestedPaging.writeProtect} does for
 * each reported frame). Results: (leaf writable at the end, frame's bit set at the end, harvest reported it).
 *
 * <p>Forbidden: the leaf ends writable with the bit clear. The guest then writes the page without
 * faulting and nothing records it, so the next harvest misses the page and a migration sends stale
 * contents. Grant-then-mark rules it out: the harvest can take the bit only after the mark, hence after
 * the grant, so its revoke finds the leaf writable and protects it again; a harvest that finds the bit
 * clear leaves it to be set by the mark still to come.
 */
@JCStressTest
@Outcome(id = "true, true, false", expect = ACCEPTABLE,
    desc = "harvest took the word before the mark: leaf writable, bit set for the next harvest")
@Outcome(id = "false, false, true", expect = ACCEPTABLE,
    desc = "grant and mark before the harvest took the word: reported and write-protected again")
@Outcome(id = "true, false, .*", expect = FORBIDDEN,
    desc = "LOST PAGE: leaf writable, bit clear: later writes are never logged")
@Outcome(expect = FORBIDDEN,
    desc = "impossible with one grant and one mark: the grant or the mark vanished, or the bit was set after its harvest and revoke")
@State
public class EptGrantHarvestStress {
    /** A present, read-only (write-protected) leaf, accessed once. */
    static final long READ_ONLY = EptLeaf.of(Slots.DATA_FRAME, EptLeaf.READ_ONLY_FLAGS) | Ept.A;

    private final int slot = Slots.take();
    private final long entry = Slots.entry(slot);
    private final long gfn = Slots.logFrame(slot, 9);

    public EptGrantHarvestStress() {
        Slots.ENTRIES.putLongVolatile(entry, READ_ONLY);
    }

    @Actor
    public void fault() {
        EptLeaf.change(Slots.ENTRIES, entry, READ_ONLY, READ_ONLY | Ept.W, Slots.LOG, -1, gfn, false);
    }

    @Actor
    public void harvest(ZZZ_Result r) {
        boolean reported = Slots.harvestTakes(slot, gfn);
        if (reported) {
            EptLeaf.clearBits(Slots.ENTRIES, entry, Ept.W, Slots.LOG, gfn, false);
        }
        r.r3 = reported;
    }

    @Arbiter
    public void outcome(ZZZ_Result r) {
        r.r1 = EptLeaf.writable(Slots.ENTRIES.getLongVolatile(entry));
        r.r2 = Slots.LOG.bitmap().isDirty(gfn);
    }
}
