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
import org.openjdk.jcstress.infra.results.ZZ_Result;

/**
 * A vCPU's hardware write through a writable shadow leaf (the mmu's own walker, setting A and D by CAS)
 * racing with the write protection of that leaf ({@link ShadowLeaf#writeProtect}: a harvest, or a guest
 * table being shadowed). Results: (the write was permitted, RW set at the end). Shadow leaves lose D
 * together with RW (the engine sets it again with the next write grant), so only the revoke is checked:
 * before the reverse-map walk used a CAS, a plain store here could put a stale writable value back.
 */
@JCStressTest
@Outcome(id = "true, false", expect = ACCEPTABLE, desc = "write before the protection, RW revoked after")
@Outcome(id = "false, false", expect = ACCEPTABLE, desc = "protection before the write: #PF")
@Outcome(id = ".*, true", expect = FORBIDDEN, desc = "PROTECTION LOST: the shadow leaf is writable again")
@State
public class ShadowHardwareRevokeStress {
    static final long WRITABLE = (Slots.DATA_FRAME << MachineMemory.FRAME_SHIFT) | Pte.P | Pte.RW | Pte.US | Pte.A | Pte.D;

    private final int slot = Slots.take();
    private final long leaf = Slots.x86Leaf(slot);

    public ShadowHardwareRevokeStress() {
        Slots.X86.putLongVolatile(leaf, WRITABLE & ~Pte.D); // the hardware sets D with the first write
    }

    @Actor
    public void vcpu(ZZ_Result r) {
        r.r1 = Slots.hardwareWriteX86(slot);
    }

    @Actor
    public void protect() {
        ShadowLeaf.writeProtect(Slots.X86, leaf, Slots.DATA_FRAME, Slots.LOG);
    }

    @Arbiter
    public void outcome(ZZ_Result r) {
        r.r2 = (Slots.X86.getLongVolatile(leaf) & Pte.RW) != 0;
    }
}
