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
import org.openjdk.jcstress.infra.results.ZZ_Result;

/**
 * D-bit logging: a vCPU's hardware write through a writable, clean EPT leaf (the mmu's own 2D walker sets
 * D by CAS) racing with the harvest's collection of that leaf ({@link EptLeaf#collectDirty}, what
 * {@code NestedPaging.collectDirtyBits} runs on every leaf: clear D, mark the frame when it was set).
 * Results: (D set at the end, frame marked by the collection).
 *
 * <p>Forbidden: neither (the write left no trace: the next collection misses it, a migration sends a
 * stale page), and both (the collection marked the frame but left D set, so it would report it again
 * with no write in between: the clear did not happen).
 */
@JCStressTest
@Outcome(id = "false, true", expect = ACCEPTABLE, desc = "write before the collection: collected, D cleared")
@Outcome(id = "true, false", expect = ACCEPTABLE, desc = "collection before the write: D left for the next one")
@Outcome(id = "false, false", expect = FORBIDDEN, desc = "LOST WRITE: no D bit and no mark")
@Outcome(expect = FORBIDDEN, desc = "marked and still dirty: the collection did not clear D")
@State
public class EptDirtyBitCollectStress {
    static final long CLEAN = EptLeaf.of(Slots.DATA_FRAME, EptLeaf.WRITABLE_FLAGS) | Ept.A;

    private final int slot = Slots.take();
    private final long leaf = Slots.eptLeaf(slot);
    private final long gfn = Slots.logFrame(slot, 5);

    public EptDirtyBitCollectStress() {
        Slots.EPT.putLongVolatile(leaf, CLEAN);
    }

    @Actor
    public void vcpu() {
        Slots.hardwareWriteEpt(slot);
    }

    @Actor
    public void collect() {
        EptLeaf.collectDirty(Slots.EPT, leaf, Slots.LOG, gfn, Slots.LOG.bitmap());
    }

    @Arbiter
    public void outcome(ZZ_Result r) {
        r.r1 = (Slots.EPT.getLongVolatile(leaf) & Ept.D) != 0;
        r.r2 = Slots.LOG.bitmap().isDirty(gfn);
    }
}
