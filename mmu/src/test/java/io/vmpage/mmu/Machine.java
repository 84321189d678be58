package io.vmpage.mmu;

import java.util.function.LongSupplier;

/**
 * Test fixture: 64 MiB of machine memory laid out as
 * <pre>
 *   [ 0,      16 MiB)  host frames for 1D data pages
 *   [16 MiB,  32 MiB)  the guest's RAM: guest-physical [0, 16 MiB) = host [16, 32 MiB) under {@link #ept}
 *   [32 MiB,  48 MiB)  host page tables (1D guest tables and EPT tables)
 *   [48 MiB,  64 MiB)  spare host frames
 * </pre>
 * Guest page tables for 2D walks live in guest-physical [8 MiB, 16 MiB).
 */
final class Machine implements AutoCloseable {
    static final long MIB = 1L << 20;
    static final long GUEST_BASE = 16 * MIB;
    static final long GUEST_SIZE = 16 * MIB;

    final MachineMemory memory = MachineMemory.allocate(64 * MIB);
    final LongSupplier hostTables = PageTables.bumpAllocator(memory, 32 * MIB, 48 * MIB);
    private long nextGuestTable = 8 * MIB;

    /** 1D page tables with host-physical table addresses. */
    PageTables tables(int levels) {
        return new PageTables(memory, PageTables.Format.X86, levels, hostTables);
    }

    /** An EPT mapping guest-physical [0, 16 MiB) to host [16, 32 MiB) with 4 KiB pages, RWX, WB. */
    PageTables ept(int levels) {
        PageTables ept = new PageTables(memory, PageTables.Format.EPT, levels, hostTables);
        for (long gpa = 0; gpa < GUEST_SIZE; gpa += MachineMemory.FRAME_SIZE) {
            ept.map(gpa, GUEST_BASE + gpa, Pte.SHIFT_4K, Ept.RWX | Ept.MEMORY_TYPE_WB);
        }
        return ept;
    }

    /** Guest page tables in guest-physical memory (stores go through the fixed EPT offset). */
    PageTables guestTables(int levels) {
        return new PageTables(memory, PageTables.Format.X86, levels, this::newGuestTable, gpa -> gpa + GUEST_BASE);
    }

    private long newGuestTable() {
        long gpa = nextGuestTable;
        nextGuestTable += MachineMemory.FRAME_SIZE;
        memory.zeroFrame((gpa + GUEST_BASE) >>> MachineMemory.FRAME_SHIFT);
        return gpa;
    }

    /** An Mmu in 1D mode on {@code tables}, registers as given. */
    Mmu mmu(MmuConfig config, PageTables tables, long cr0, long cr4, long efer) {
        Mmu mmu = new Mmu(memory, config);
        mmu.setCr0(cr0);
        mmu.setCr4(cr4 | (tables.levels() == 5 ? ControlRegisters.CR4_LA57 : 0));
        mmu.setEfer(efer);
        mmu.movToCr3(tables.root());
        mmu.enter(0, 0);
        return mmu;
    }

    Mmu mmu(MmuConfig config, PageTables tables) {
        return mmu(config, tables, ControlRegisters.CR0_PG | ControlRegisters.CR0_WP, 0, ControlRegisters.EFER_NXE);
    }

    /** An Mmu in 2D mode: guest tables {@code guest}, EPT {@code ept} (A/D as given), VPID 1. */
    Mmu nestedMmu(MmuConfig config, PageTables guest, PageTables ept, boolean eptAd) {
        Mmu mmu = mmu(config, guest);
        mmu.enter(1, Ept.eptp(ept.root(), ept.levels(), eptAd));
        return mmu;
    }

    @Override
    public void close() {
        memory.close();
    }
}
