package io.vmpage.stress;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.guest.GuestKernel;
import io.vmpage.mmu.Access;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.PageTables;
import io.vmpage.mmu.Pte;
import org.openjdk.jcstress.infra.results.III_Result;

/** The one-VM-per-trial guests of the jcstress tests that drive a real vCPU ({@link PauseRetire}, {@link SwapStore}). */
final class TrialGuests {
    /** The address the trial's writer stores to. */
    static final long VA = 0x7f00_0000_0000L;
    private static final long GPA = 0x1000;

    private TrialGuests() {
    }

    /**
     * A small VM with one vCPU whose address {@link #VA} is mapped and written 0 (TLB warm). Nested and
     * shadow: 64 KiB, page tables a bootloader builds ({@code Vm.guestPageTables}) mapping it to
     * {@link #GPA}. Paravirtual: 128 KiB (a PV guest's memory is all there from the start), the guest
     * kernel model booted, {@link #VA} a page of a user address space it faulted in.
     */
    static PauseRetire.Guest create(Host host, PagingMode mode) {
        Vcpu cpu;
        Vm vm;
        if (mode == PagingMode.PARAVIRTUAL) {
            vm = host.createVm(VmConfig.of(128L << 10).withPaging(mode));
            cpu = vm.vcpu(0);
            GuestKernel kernel = GuestKernel.boot(vm);
            GuestKernel.AddressSpace space = kernel.createAddressSpace(cpu);
            kernel.mmap(space, VA, MachineMemory.FRAME_SIZE, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE);
            cpu.run(() -> kernel.switchTo(cpu, space));
        } else {
            vm = host.createVm(VmConfig.of(64L << 10).withPaging(mode));
            PageTables tables = vm.guestPageTables(32L << 10, 64L << 10);
            tables.map(VA, GPA, Pte.SHIFT_4K, Pte.P | Pte.RW);
            cpu = vm.vcpu(0);
            cpu.loadCr3(tables.root());
        }
        cpu.writeLong(VA, 0);
        long hpa = cpu.translate(VA, Access.READ);
        long gfn = host.frames().guestFrame(hpa >>> MachineMemory.FRAME_SHIFT);
        return new PauseRetire.Guest(vm, (gfn << MachineMemory.FRAME_SHIFT) | (hpa & MachineMemory.FRAME_OFFSET_MASK));
    }

    /**
     * A trial's writer: stores 1, 2, 3 to {@link #VA} on a thread attached to the vCPU, or as one-off
     * accesses, each completed store's value in {@code r.r1}; a vCPU that faults it out (retired: its guest
     * went elsewhere) ends it where it got.
     */
    static void storeOneTwoThree(PauseRetire.Guest g, boolean attached, III_Result r) {
        Vcpu cpu = g.vm().vcpu(0);
        try {
            if (attached) {
                cpu.attachThread();
            }
            try {
                for (int v = 1; v <= 3; v++) {
                    cpu.writeLong(VA, v);
                    r.r1 = v;
                }
            } finally {
                if (attached) {
                    cpu.detachThread();
                }
            }
        } catch (IllegalStateException retired) {
            // the vCPU belongs to a source that handed its guest over: r1 says how far it got
        }
    }
}
