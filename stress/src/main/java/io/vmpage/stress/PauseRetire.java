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

/**
 * The switch-over a migration source makes, on the engine's own {@code Vm} and {@code Vcpu}: a guest
 * writer stores 1, 2, 3 to one word while another thread pauses the VM, copies the word (what the
 * destination receives), and retires the vCPUs (the guest runs on elsewhere now). Results: (stores the
 * writer completed before it faulted, the copy, the word after both). Only (k, k, k) is allowed: a store
 * that lands after the pause returned is lost on the destination; a completed store missing from the
 * copy, or a faulted one present in it, breaks the pause's promise that the vCPU is outside guest mode.
 *
 * <p>Each trial has its own VM (a vCPU cannot be un-retired), created on a shared host and destroyed by
 * the arbiter; jcstress keeps at most 10,240 trials live (see {@link Slots}), at most 32 frames each. The
 * host hands destroyed VMs' ids and VPIDs out again, so the 16-bit id spaces last.
 */
final class PauseRetire {
    static final Host HOST = Host.create(768L << 20);
    private static final long VA = 0x7f00_0000_0000L;
    private static final long GPA = 0x1000;

    private PauseRetire() {
    }

    /** A trial's VM and the guest-physical address of the word its writer stores to. */
    record Guest(Vm vm, long gpa) {
    }

    /**
     * A small VM with one vCPU whose address {@link #VA} is mapped and written 0 (TLB warm). Nested and
     * shadow: 64 KiB, page tables a bootloader builds ({@code Vm.guestPageTables}) mapping it to
     * {@link #GPA}. Paravirtual: 128 KiB (a PV guest's memory is all there from the start), the guest
     * kernel model booted, {@link #VA} a page of a user address space it faulted in.
     */
    static Guest guest(PagingMode mode) {
        Vcpu cpu;
        Vm vm;
        if (mode == PagingMode.PARAVIRTUAL) {
            vm = HOST.createVm(VmConfig.of(128L << 10).withPaging(mode));
            cpu = vm.vcpu(0);
            GuestKernel kernel = GuestKernel.boot(vm);
            GuestKernel.AddressSpace space = kernel.createAddressSpace(cpu);
            kernel.mmap(space, VA, MachineMemory.FRAME_SIZE, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE);
            cpu.run(() -> kernel.switchTo(cpu, space));
        } else {
            vm = HOST.createVm(VmConfig.of(64L << 10).withPaging(mode));
            PageTables tables = vm.guestPageTables(32L << 10, 64L << 10);
            tables.map(VA, GPA, Pte.SHIFT_4K, Pte.P | Pte.RW);
            cpu = vm.vcpu(0);
            cpu.loadCr3(tables.root());
        }
        cpu.writeLong(VA, 0);
        long hpa = cpu.translate(VA, Access.READ);
        long gfn = HOST.frames().guestFrame(hpa >>> MachineMemory.FRAME_SHIFT);
        return new Guest(vm, (gfn << MachineMemory.FRAME_SHIFT) | (hpa & MachineMemory.FRAME_OFFSET_MASK));
    }

    /** The writer: stores 1, 2, 3 on a thread attached to the vCPU, or as one-off accesses, until the retirement faults it. */
    static void write(Guest g, boolean attached, III_Result r) {
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

    /** The migration thread: pause, copy, retire (as {@code Migration} does at the switch-over). */
    static void switchOver(Guest g, III_Result r) {
        g.vm().pause();
        r.r2 = (int) g.vm().readPhysicalLong(g.gpa());
        g.vm().retireVcpus();
    }

    /** The word once both are done; the VM goes. */
    static void after(Guest g, III_Result r) {
        r.r3 = (int) g.vm().readPhysicalLong(g.gpa());
        HOST.destroyVm(g.vm());
    }
}
