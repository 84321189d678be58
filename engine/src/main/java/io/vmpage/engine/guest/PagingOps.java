package io.vmpage.engine.guest;

import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.mmu.ControlRegisters;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Pte;

/**
 * How the guest kernel touches its paging structures (Linux's {@code pv_ops.mmu}): native stores and
 * instructions under nested and shadow paging, hypercalls under paravirtual paging. All accesses run on
 * the given vCPU in supervisor mode.
 */
interface PagingOps {
    /** The entry at {@code index} of the table in guest frame {@code tableGfn}. */
    long readEntry(Vcpu cpu, long tableGfn, int index);

    /** Replaces that entry. */
    void writeEntry(Vcpu cpu, long tableGfn, int index, long value);

    /** The frame number an entry must hold to reach guest frame {@code gfn}. */
    long entryFrame(Vcpu cpu, long gfn);

    /** The guest frame an entry points at. */
    long frameOfEntry(long entry);

    /** Readies a fresh (zeroed) frame to serve as a level-{@code level} table. */
    void prepareTable(Vcpu cpu, long gfn, int level);

    /** Loads CR3 with the table in {@code rootGfn} and {@code pcid}, keeping that PCID's entries when {@code noFlush}. */
    void loadCr3(Vcpu cpu, long rootGfn, int pcid, boolean noFlush);

    void invlpg(Vcpu cpu, long va);

    /** Zero-fills guest frame {@code gfn} (clear_page). */
    void zeroFrame(Vcpu cpu, long gfn);

    /** Guest frame {@code gfn} goes back to the kernel's free list (a table frame loses its table role). */
    void releaseFrame(Vcpu cpu, long gfn);

    static PagingOps forVm(Vm vm, Boot boot) {
        return switch (vm.pagingMode()) {
            case NESTED, SHADOW -> new Native();
            case PARAVIRTUAL -> throw new IllegalArgumentException(
                "the guest kernel does not drive paravirtual paging yet: boot it in NESTED or SHADOW mode");
        };
    }

    /** Plain stores through the direct map and native MOV CR3 / INVLPG. */
    final class Native implements PagingOps {
        static long directMap(long gfn, int index) {
            return GuestKernel.DIRECT_MAP + (gfn << MachineMemory.FRAME_SHIFT) + ((long) index << 3);
        }

        @Override
        public long readEntry(Vcpu cpu, long tableGfn, int index) {
            return cpu.readLong(directMap(tableGfn, index));
        }

        @Override
        public void writeEntry(Vcpu cpu, long tableGfn, int index, long value) {
            cpu.writeLong(directMap(tableGfn, index), value);
        }

        @Override
        public long entryFrame(Vcpu cpu, long gfn) {
            return gfn;
        }

        @Override
        public long frameOfEntry(long entry) {
            return (entry & Pte.ADDRESS_MASK) >>> MachineMemory.FRAME_SHIFT;
        }

        @Override
        public void prepareTable(Vcpu cpu, long gfn, int level) {
        }

        @Override
        public void loadCr3(Vcpu cpu, long rootGfn, int pcid, boolean noFlush) {
            cpu.loadCr3((rootGfn << MachineMemory.FRAME_SHIFT) | pcid | (noFlush ? ControlRegisters.CR3_NO_FLUSH : 0));
        }

        @Override
        public void invlpg(Vcpu cpu, long va) {
            cpu.invlpg(va);
        }

        @Override
        public void zeroFrame(Vcpu cpu, long gfn) {
            long base = directMap(gfn, 0);
            for (int i = 0; i < MachineMemory.FRAME_SIZE; i += 8) {
                cpu.writeLong(base + i, 0);
            }
        }

        @Override
        public void releaseFrame(Vcpu cpu, long gfn) {
        }
    }
}
