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
 * A vCPU's hardware write through a writable L1 entry of a paravirtual guest's own tables (the mmu's
 * own walker, which sets A and D by CAS) racing with the hypervisor's log-dirty write protection of that
 * entry ({@link PvL1Entry#writeProtect}). Results: (the write was permitted, RW set at the end, D set at
 * the end). The D bit is the guest's own here: losing it corrupts what the guest kernel sees.
 */
@JCStressTest
@Outcome(id = "true, false, true", expect = ACCEPTABLE, desc = "write before the protection: D set, RW held back after")
@Outcome(id = "false, false, false", expect = ACCEPTABLE, desc = "protection before the write: #PF, no D")
@Outcome(id = ".*, true, .*", expect = FORBIDDEN, desc = "PROTECTION LOST: the entry is writable again")
@Outcome(id = "true, false, false", expect = FORBIDDEN, desc = "D LOST: the guest's D bit of a write is gone")
@Outcome(expect = FORBIDDEN, desc = "D set without a permitted write")
@State
public class PvHardwareRevokeStress {
    static final long WRITABLE = (Slots.DATA_FRAME << MachineMemory.FRAME_SHIFT) | Pte.P | Pte.RW | Pte.US | Pte.A;

    private final int slot = Slots.take();
    private final long leaf = Slots.x86Leaf(slot);

    public PvHardwareRevokeStress() {
        Slots.X86.putLongVolatile(leaf, WRITABLE);
    }

    @Actor
    public void vcpu(ZZZ_Result r) {
        r.r1 = Slots.hardwareWriteX86(slot);
    }

    @Actor
    public void harvest() {
        PvL1Entry.writeProtect(Slots.X86, leaf, Slots.LOG);
    }

    @Arbiter
    public void outcome(ZZZ_Result r) {
        long e = Slots.X86.getLongVolatile(leaf);
        r.r2 = (e & Pte.RW) != 0;
        r.r3 = (e & Pte.D) != 0;
    }
}
