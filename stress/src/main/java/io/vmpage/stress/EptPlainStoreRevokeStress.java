package io.vmpage.stress;

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
 * Negative control for {@link EptHardwareRevokeStress}: the same race with the revoke written as a read
 * and a plain release store (the shape shadow paging's revoke had before every leaf change went through
 * a CAS; written out here, not in the engine). It shows the harness reaches the interleaving the CAS
 * closes: the revoke reads the leaf, the hardware's walk sets D by CAS, and the store puts the old value
 * minus W back, wiping D. ACCEPTABLE_INTERESTING rather than FORBIDDEN so the build never depends on
 * seeing it (timing dependent); the report shows how often it was hit.
 * Results as in {@link EptHardwareRevokeStress}: (write permitted, leaf writable at the end, D at the end).
 */
@JCStressTest
@Outcome(id = "true, false, true", expect = ACCEPTABLE, desc = "write before the revoke")
@Outcome(id = "false, false, false", expect = ACCEPTABLE, desc = "revoke before the write: EPT violation")
@Outcome(id = "true, false, false", expect = ACCEPTABLE_INTERESTING,
    desc = "THE BUG a CAS prevents: the plain store wiped the D bit the hardware had just set")
@Outcome(expect = FORBIDDEN, desc = "impossible even with a plain store")
@State
public class EptPlainStoreRevokeStress {
    private final int slot = Slots.take();
    private final long leaf = Slots.eptLeaf(slot);

    public EptPlainStoreRevokeStress() {
        Slots.EPT.putLongVolatile(leaf, EptHardwareRevokeStress.WRITABLE);
    }

    @Actor
    public void vcpu(ZZZ_Result r) {
        r.r1 = Slots.hardwareWriteEpt(slot);
    }

    @Actor
    public void harvestPlainStore() {
        long e = Slots.EPT.getLongVolatile(leaf);
        Slots.EPT.putLongRelease(leaf, e & ~Ept.W);
    }

    @Arbiter
    public void outcome(ZZZ_Result r) {
        long e = Slots.EPT.getLongVolatile(leaf);
        r.r2 = EptLeaf.writable(e);
        r.r3 = (e & Ept.D) != 0;
    }
}
