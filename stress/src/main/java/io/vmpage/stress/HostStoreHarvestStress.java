package io.vmpage.stress;

import static org.openjdk.jcstress.annotations.Expect.ACCEPTABLE;
import static org.openjdk.jcstress.annotations.Expect.FORBIDDEN;

import org.openjdk.jcstress.annotations.Actor;
import org.openjdk.jcstress.annotations.Arbiter;
import org.openjdk.jcstress.annotations.JCStressTest;
import org.openjdk.jcstress.annotations.Outcome;
import org.openjdk.jcstress.annotations.State;
import org.openjdk.jcstress.infra.results.III_Result;

/**
 * A host-side store to a page that is already dirty (an earlier host store's bit not harvested yet),
 * logged by the engine's own {@code DirtyLog.Writer.markHost} after it lands, racing with a harvest
 * that takes the page's bit and then copies the page; the arbiter harvests again. Results: (the harvest
 * took the bit, the value its copy saw, the arbiter's harvest took the bit).
 *
 * <p>The harvest always takes the earlier store's bit. Either its copy sees the new value, or the mark
 * came after it and the bit is set again for the next harvest. A copy of the old value with no bit left
 * is a lost store: what the mark's unfenced bit check allowed on x86, where the check (a load) may pass
 * the store still in the store buffer and find the earlier bit the harvest is about to take.
 */
@JCStressTest
@Outcome(id = "1, 2, 0", expect = ACCEPTABLE, desc = "the harvest copied the store; the mark found the bit it took")
@Outcome(id = "1, 2, 1", expect = ACCEPTABLE, desc = "the harvest copied the store, and the mark set the bit again after it")
@Outcome(id = "1, 1, 1", expect = ACCEPTABLE, desc = "the harvest copied before the store: the next harvest takes it")
@Outcome(id = "1, 1, 0", expect = FORBIDDEN, desc = "LOST STORE: copied without it, and no bit left for the next harvest")
@Outcome(expect = FORBIDDEN, desc = "the harvest missed the earlier store's bit")
@State
public class HostStoreHarvestStress {
    private final int slot = Slots.take();
    private final long gfn = Slots.logFrame(slot, 9);
    private final long data = Slots.entry(slot);

    public HostStoreHarvestStress() {
        Slots.ENTRIES.putLongVolatile(data, 1);
        Slots.LOG.markHost(gfn); // the earlier store, not harvested yet
    }

    @Actor
    public void hostStore() {
        Slots.ENTRIES.putLongRelease(data, 2); // as Vm.writePhysicalLong stores...
        Slots.LOG.markHost(gfn); // ...and then logs the page
    }

    @Actor
    public void harvest(III_Result r) {
        r.r1 = Slots.harvestTakes(slot, gfn) ? 1 : 0;
        r.r2 = (int) Slots.ENTRIES.getLong(data); // the copy, a plain read as the page copy is
    }

    @Arbiter
    public void harvestAgain(III_Result r) {
        r.r3 = Slots.harvestTakes(slot, gfn) ? 1 : 0;
    }
}
