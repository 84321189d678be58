package io.vmpage.stress;

import static org.openjdk.jcstress.annotations.Expect.ACCEPTABLE;
import static org.openjdk.jcstress.annotations.Expect.FORBIDDEN;

import io.vmpage.engine.paging.shadow.ShadowLeaf;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Pte;
import org.openjdk.jcstress.annotations.Actor;
import org.openjdk.jcstress.annotations.Arbiter;
import org.openjdk.jcstress.annotations.JCStressTest;
import org.openjdk.jcstress.annotations.Outcome;
import org.openjdk.jcstress.annotations.State;
import org.openjdk.jcstress.infra.results.ZZZ_Result;

/**
 * Shadow paging's write-protect protocol on the production code: a shadow fill for a write while the
 * log is on (what {@code ShadowPaging.installLeaf} does: {@link ShadowLeaf#change} from the read-only
 * leaf to a writable, dirty one, which CASes and then logs the frame) racing with a harvest (take the
 * bitmap word, then {@link ShadowLeaf#writeProtect}, as the harvest's walk of the reverse map does).
 * Results and the forbidden lost page as in {@link EptGrantHarvestStress}.
 */
@JCStressTest
@Outcome(id = "true, true, false", expect = ACCEPTABLE,
    desc = "harvest took the word before the mark: leaf writable, bit set for the next harvest")
@Outcome(id = "false, false, true", expect = ACCEPTABLE,
    desc = "grant and mark before the harvest took the word: reported and write-protected again")
@Outcome(id = "true, false, .*", expect = FORBIDDEN,
    desc = "LOST PAGE: leaf writable, bit clear: later writes are never logged")
@Outcome(expect = FORBIDDEN, desc = "impossible with one grant and one mark")
@State
public class ShadowGrantHarvestStress {
    static final long READ_ONLY = (Slots.DATA_FRAME << MachineMemory.FRAME_SHIFT) | Pte.P | Pte.US | Pte.A;
    static final long WRITABLE = READ_ONLY | Pte.RW | Pte.D;

    private final int slot = Slots.take();
    private final long entry = Slots.entry(slot);
    private final long gfn = Slots.logFrame(slot, 17);

    public ShadowGrantHarvestStress() {
        Slots.ENTRIES.putLongVolatile(entry, READ_ONLY);
    }

    @Actor
    public void fill() {
        ShadowLeaf.change(Slots.ENTRIES, entry, READ_ONLY, WRITABLE, Slots.LOG, -1, gfn);
    }

    @Actor
    public void harvest(ZZZ_Result r) {
        boolean reported = Slots.harvestTakes(slot, gfn);
        if (reported) {
            ShadowLeaf.writeProtect(Slots.ENTRIES, entry, Slots.DATA_FRAME, Slots.LOG);
        }
        r.r3 = reported;
    }

    @Arbiter
    public void outcome(ZZZ_Result r) {
        r.r1 = ShadowLeaf.writable(Slots.ENTRIES.getLongVolatile(entry));
        r.r2 = Slots.LOG.bitmap().isDirty(gfn);
    }
}
