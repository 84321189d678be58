package io.vmpage.engine;

import io.vmpage.mmu.Ept;
import io.vmpage.mmu.Fault;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.PageTables;
import io.vmpage.mmu.Pte;
import io.vmpage.mmu.Translation;

/**
 * Hardware-assisted paging: the engine keeps one EPT per VM (host-physical tables in frames charged to
 * the VM) and fills it on EPT violations, populating guest frames on first touch, as KVM's TDP MMU does.
 * The guest's own page tables, CR3 loads, INVLPG and #PFs never exit.
 *
 * <p>The EPT maps only frames this VM owns, so whatever the guest writes into its own tables, every
 * guest-physical address it can produce lands in its own memory or faults.
 *
 * <p>Concurrency: EPT edits (fills by any vCPU's exit, removals by the engine) take {@link #lock};
 * walks by every vCPU's hardware read the entries lock-free (release stores pair with the walkers'
 * volatile loads).
 */
final class NestedPaging implements PagingBackend {
    private static final long LEAF_FLAGS = Ept.RWX | Ept.MEMORY_TYPE_WB;

    private final Vm vm;
    private final PageTables ept;
    private final long eptp;
    private final Object lock = new Object();
    private final java.util.List<Long> tableFrames = new java.util.ArrayList<>();

    NestedPaging(Vm vm) {
        this.vm = vm;
        this.ept = new PageTables(vm.host().memory(), PageTables.Format.EPT, 4, this::newTable);
        this.eptp = Ept.eptp(ept.root(), 4, true);
    }

    private long newTable() {
        long frame = vm.host().allocateTableFrame(vm.id());
        tableFrames.add(frame);
        return frame << MachineMemory.FRAME_SHIFT;
    }

    /** The EPT pointer every vCPU of the VM runs with (A/D enabled). */
    long eptp() {
        return eptp;
    }

    @Override
    public void attach(Vcpu vcpu) {
        vcpu.mmu().enter(vcpu.vpid(), eptp);
    }

    @Override
    public void loadCr3(Vcpu vcpu, long cr3) {
        vcpu.mmu().movToCr3(cr3); // no exit: EPT leaves CR3 to the guest
    }

    @Override
    public void invlpg(Vcpu vcpu, long va) {
        vcpu.mmu().invlpg(va);
    }

    @Override
    public int handleFault(Vcpu vcpu, Translation t) {
        if (t.fault == Fault.PAGE_FAULT) {
            return INJECT; // delivered straight to the guest: with EPT, #PF does not exit
        }
        if (t.fault == Fault.EPT_MISCONFIG) {
            vcpu.countExit(ExitReason.EPT_MISCONFIG);
            throw new IllegalStateException("EPT misconfiguration at guest-physical 0x" + Long.toHexString(t.faultAddress)
                + " in VM " + vm.id() + ": the engine's EPT is corrupt");
        }
        vcpu.countExit(ExitReason.EPT_VIOLATION);
        long gfn = t.faultAddress >>> MachineMemory.FRAME_SHIFT;
        long mfn = vm.populate(gfn); // MACHINE_CHECK to the guest beyond its memory
        synchronized (lock) {
            if (vm.physicalMap().machineFrame(gfn) != mfn) {
                return RETRY; // discarded meanwhile: fault again and populate afresh
            }
            long leafAddress = ept.leafAddress(gfn << MachineMemory.FRAME_SHIFT);
            if (leafAddress < 0 || (ept.read(leafAddress) & Ept.RWX) == 0) {
                ept.map(gfn << MachineMemory.FRAME_SHIFT, mfn << MachineMemory.FRAME_SHIFT, Pte.SHIFT_4K, LEAF_FLAGS);
            }
        }
        return RETRY;
    }

    /**
     * Removes guest frame {@code gfn} from the EPT and returns its machine frame to the host, after every
     * vCPU has dropped cached translations to it (so no vCPU can touch the frame once it is reused).
     * Returns false when the frame was not populated. The guest sees zeros there on its next touch.
     */
    @Override
    public boolean discard(long gfn) {
        long mfn = vm.physicalMap().machineFrame(gfn);
        if (mfn < 0) {
            return false;
        }
        // Unhook under the EPT lock: a fault handler holding an mfn read before this re-checks the p2m
        // under the same lock, so it cannot map the old frame back.
        synchronized (lock) {
            if (!vm.physicalMap().remove(gfn, mfn)) {
                return false;
            }
            long leafAddress = ept.leafAddress(gfn << MachineMemory.FRAME_SHIFT);
            if (leafAddress >= 0) {
                ept.write(leafAddress, 0);
            }
        }
        vm.flushRemoteTlbs(); // no vCPU keeps a translation to the old frame...
        vm.releaseFrame(mfn); // ...before it can be handed to anyone else
        return true;
    }

    @Override
    public void release() {
        synchronized (lock) {
            for (long frame : tableFrames) {
                vm.host().frames().free(frame);
            }
            tableFrames.clear();
        }
    }
}
