package io.vmpage.stress;

import static org.openjdk.jcstress.annotations.Expect.ACCEPTABLE;
import static org.openjdk.jcstress.annotations.Expect.FORBIDDEN;

import io.vmpage.engine.paging.pv.PvL1Entry;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Pte;
import org.openjdk.jcstress.annotations.Actor;
import org.openjdk.jcstress.annotations.Arbiter;
import org.openjdk.jcstress.annotations.JCStressTest;
import org.openjdk.jcstress.annotations.Outcome;
import org.openjdk.jcstress.annotations.State;
import org.openjdk.jcstress.infra.results.ZZZ_Result;

/**
 * Paravirtual paging's log-dirty protocol on the production code: the guest's first write to a page
 * whose L1 entry the hypervisor holds back (what {@code ParavirtualPaging.grantWrite} does:
 * {@link PvL1Entry#change} to {@link PvL1Entry#granted}, which CASes RW back and then logs the frame)
 * racing with a harvest (take the bitmap word, then {@link PvL1Entry#writeProtect}, as the harvest's
 * walk of the L1 tables does). Results and the forbidden lost page as in {@link EptGrantHarvestStress}.
 */
@JCStressTest
@Outcome(id = "true, true, false", expect = ACCEPTABLE,
    desc = "harvest took the word before the mark: entry writable, bit set for the next harvest")
@Outcome(id = "false, false, true", expect = ACCEPTABLE,
    desc = "grant and mark before the harvest took the word: reported and write-protected again")
@Outcome(id = "true, false, .*", expect = FORBIDDEN,
    desc = "LOST PAGE: entry writable, bit clear: later writes are never logged")
@Outcome(expect = FORBIDDEN, desc = "impossible with one grant and one mark")
@State
public class PvGrantHarvestStress {
    /** A writable L1 entry the log holds back (RW clear, LOG_DIRTY_WP set). */
    static final long HELD_BACK = PvL1Entry.writeProtected((Slots.DATA_FRAME << MachineMemory.FRAME_SHIFT)
        | Pte.P | Pte.RW | Pte.US | Pte.A);

    private final int slot = Slots.take();
    private final long entry = Slots.entry(slot);
    private final long gfn = Slots.logFrame(slot, 33);

    public PvGrantHarvestStress() {
        Slots.ENTRIES.putLongVolatile(entry, HELD_BACK);
    }

    @Actor
    public void firstWrite() {
        PvL1Entry.change(Slots.ENTRIES, entry, HELD_BACK, PvL1Entry.granted(HELD_BACK), Slots.LOG, -1, gfn);
    }

    @Actor
    public void harvest(ZZZ_Result r) {
        boolean reported = Slots.harvestTakes(slot, gfn);
        if (reported) {
            PvL1Entry.writeProtect(Slots.ENTRIES, entry, Slots.LOG);
        }
        r.r3 = reported;
    }

    @Arbiter
    public void outcome(ZZZ_Result r) {
        r.r1 = PvL1Entry.writable(Slots.ENTRIES.getLongVolatile(entry));
        r.r2 = Slots.LOG.bitmap().isDirty(gfn);
    }
}
