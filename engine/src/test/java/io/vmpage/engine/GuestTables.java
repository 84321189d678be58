package io.vmpage.engine;

import io.vmpage.mmu.ControlRegisters;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.PageTables;
import io.vmpage.mmu.Pte;

/** Guest page tables written from the host side (a bootloader), in guest frames from the top of guest memory down. */
public final class GuestTables {
    public final Vm vm;
    public final PageTables tables;
    private long nextTableGfn;

    public GuestTables(Vm vm) {
        this.vm = vm;
        this.nextTableGfn = (vm.memorySize() >>> MachineMemory.FRAME_SHIFT) - 1;
        this.tables = new PageTables(vm.host().memory(), PageTables.Format.X86, 4,
            () -> {
                long gfn = nextTableGfn--;
                vm.host().memory().zeroFrame(vm.populate(gfn));
                return gfn << MachineMemory.FRAME_SHIFT;
            },
            gpa -> (vm.populate(gpa >>> 12) << 12) | (gpa & 0xFFF));
    }

    public void map(long va, long gpa, long flags) {
        tables.map(va, gpa, Pte.SHIFT_4K, flags);
    }

    /** Guest-physical address of the leaf entry mapping {@code va}. */
    public long leafGpa(long va) {
        return tables.leafAddress(va);
    }

    public void boot(Vcpu vcpu) {
        vcpu.setCr0(ControlRegisters.CR0_PG | ControlRegisters.CR0_WP);
        vcpu.setEfer(ControlRegisters.EFER_NXE);
        vcpu.setCr4(ControlRegisters.CR4_PCIDE | ControlRegisters.CR4_PGE);
        vcpu.loadCr3(tables.root());
    }

    /** The machine frame of guest frame {@code gfn}, populated on first use (the engine's own populate, for tests elsewhere). */
    public static long populate(Vm vm, long gfn) {
        return vm.populate(gfn);
    }
}
