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
 * A vCPU's hardware write through a writable EPT leaf (the mmu's own 2D walker, which sets A and D in
 * the leaf by CAS) racing with the harvest's write protection of that leaf ({@link EptLeaf#clearBits}
 * W, the production revoke). Results: (the write was permitted, leaf writable at the end, D set at the end).
 *
 * <p>Forbidden: the leaf writable at the end (the hardware's A/D store put back the W the revoke took:
 * later writes would go unlogged), and a permitted write whose D bit is gone (the revoke's store wiped
 * the hardware's D: D-bit logging would miss the write). Both entry updates are CAS on the value each
 * read, so each either sees the other's change or retries.
 */
@JCStressTest
@Outcome(id = "true, false, true", expect = ACCEPTABLE, desc = "write before the revoke: D set, W revoked after")
@Outcome(id = "false, false, false", expect = ACCEPTABLE, desc = "revoke before the write: EPT violation, no D")
@Outcome(id = ".*, true, .*", expect = FORBIDDEN, desc = "REVOKE LOST: the leaf is writable again")
@Outcome(id = "true, false, false", expect = FORBIDDEN, desc = "D LOST: a permitted write left no D bit")
@Outcome(expect = FORBIDDEN, desc = "D set without a permitted write")
@State
public class EptHardwareRevokeStress {
    static final long WRITABLE = EptLeaf.of(Slots.DATA_FRAME, EptLeaf.WRITABLE_FLAGS) | Ept.A;

    private final int slot = Slots.take();
    private final long leaf = Slots.eptLeaf(slot);

    public EptHardwareRevokeStress() {
        Slots.EPT.putLongVolatile(leaf, WRITABLE);
    }

    @Actor
    public void vcpu(ZZZ_Result r) {
        r.r1 = Slots.hardwareWriteEpt(slot);
    }

    @Actor
    public void harvest() {
        EptLeaf.clearBits(Slots.EPT, leaf, Ept.W, Slots.LOG, Slots.logFrame(slot, 0), false);
    }

    @Arbiter
    public void outcome(ZZZ_Result r) {
        long e = Slots.EPT.getLongVolatile(leaf);
        r.r2 = EptLeaf.writable(e);
        r.r3 = (e & Ept.D) != 0;
    }
}
