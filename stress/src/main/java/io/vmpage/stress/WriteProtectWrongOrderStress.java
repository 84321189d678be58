package io.vmpage.stress;

import static io.vmpage.stress.EptGrantHarvestStress.READ_ONLY;
import static org.openjdk.jcstress.annotations.Expect.ACCEPTABLE;
import static org.openjdk.jcstress.annotations.Expect.ACCEPTABLE_INTERESTING;
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
 * Negative control for {@link EptGrantHarvestStress}: the same race with the fault side in the wrong order,
 * mark first and then CAS the entry writable (written out here, not in the engine). It shows that the
 * harness can reach the lost-page state the real order prevents: mark, the harvest takes the bit and
 * finds nothing to revoke (entry still read-only), then the grant makes the entry writable with its bit
 * clear. That outcome is ACCEPTABLE_INTERESTING rather than FORBIDDEN so the build never depends on
 * seeing it (it is timing dependent); the jcstress report shows how often it was hit.
 * Results as in {@link EptGrantHarvestStress}: (entry writable, bit set, harvest reported it).
 */
@JCStressTest
@Outcome(id = "true, true, false", expect = ACCEPTABLE,
    desc = "harvest took the word before the mark: entry writable, bit set for the next harvest")
@Outcome(id = "false, false, true", expect = ACCEPTABLE,
    desc = "mark and grant before the harvest's revoke: reported and write-protected again")
@Outcome(id = "true, false, true", expect = ACCEPTABLE_INTERESTING,
    desc = "THE BUG grant-then-mark prevents: mark, harvest takes it and revokes nothing, grant: writable, bit clear")
@Outcome(expect = FORBIDDEN, desc = "impossible even in this order: the grant or the mark vanished")
@State
public class WriteProtectWrongOrderStress {
    private final int slot = Slots.take();
    private final long entry = Slots.entry(slot);
    private final long gfn = Slots.logFrame(slot, 9);

    public WriteProtectWrongOrderStress() {
        Slots.ENTRIES.putLongVolatile(entry, READ_ONLY);
    }

    @Actor
    public void faultMarkFirst() {
        Slots.LOG.bitmap().mark(gfn);
        Slots.ENTRIES.compareAndSetLong(entry, READ_ONLY, READ_ONLY | Ept.W);
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
