package io.vmpage.engine.paging.shadow;

import io.vmpage.engine.GuestFaultException;
import io.vmpage.engine.memory.P2mEntry;
import io.vmpage.engine.paging.VmContext;
import io.vmpage.mmu.Access;
import io.vmpage.mmu.ControlRegisters;
import io.vmpage.mmu.Fault;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Pte;

/**
 * The software walk of a guest's own page tables that shadow paging needs (KVM's {@code FNAME(walk_addr)}):
 * the same architectural rules the mmu's hardware walker applies, but reading the tables in
 * GUEST-physical memory (each table frame reached through the VM's p2m, populated on first touch) and
 * recording, per level, the guest entry used and where it lives, so the shadow fill can re-check them.
 *
 * <p>Rules: permissions AND over the levels (R/W, U/S), NX ORs and counts only with EFER.NXE, CR0.WP,
 * SMEP, reserved bits (address bits at or above MAXPHYADDR, NX without NXE, PS in a PML4E/PML5E, the low
 * address bits of a large page), 4 KiB / 2 MiB / 1 GiB pages, 4 or 5 levels, canonical check. A is set
 * by CAS in every entry used (the leaf's A, and D on a write, only when the access is permitted), as
 * hardware does.
 *
 * <p>Not thread-safe: {@link ShadowPaging} uses one instance under its lock.
 */
final class ShadowGuestWalk {
    private final VmContext vm;
    private final MachineMemory memory;
    /** Bits (MAXPHYADDR-1):12. */
    final long addressMask;
    /** Bits 51:MAXPHYADDR. */
    private final long reservedAddressBits;

    // ---- outputs of the last walk (index = level)
    /** Guest entry used at each level (with the A/D bits this walk set). */
    final long[] entry = new long[6];
    /** Host-physical address of that entry (inside the guest table's machine frame). */
    final long[] entryHpa = new long[6];
    /** Guest frame of the table read at each level. */
    final long[] tableGfn = new long[6];
    /** Levels of the walk (4 or 5). */
    int levels;
    /** Level of the guest leaf (1, 2 or 3). */
    int leafLevel;
    /** Guest-physical address the access reaches. */
    long gpa;
    /** #PF error code when the walk faulted. */
    int errorCode;
    /** The guest table frame that is not here when the walk returned {@link #ABSENT}. */
    long absentGfn;

    /** {@link #walk} result: a guest table frame is not here (remote, swapped): bring it in and walk again. */
    static final int ABSENT = -2;
    /**
     * {@link #walk} result: a guest table lives in a frame shared copy-on-write ({@link #sharedGfn}): the
     * walk would write A/D bits into it and the fill would shadow it, so its sharing is broken first.
     */
    static final int SHARED_TABLE = -3;
    /** The guest table frame that is shared when the walk returned {@link #SHARED_TABLE}. */
    long sharedGfn;

    ShadowGuestWalk(VmContext vm, int maxPhysAddrBits) {
        this.vm = vm;
        this.memory = vm.memory();
        this.addressMask = ((1L << maxPhysAddrBits) - 1) & Pte.ADDRESS_MASK;
        this.reservedAddressBits = Pte.ADDRESS_MASK & ~addressMask;
    }

    /**
     * Walks the guest tables rooted at guest-physical {@code cr3} for {@code va} and {@code access}.
     * Returns {@link Fault#NONE}, {@link Fault#PAGE_FAULT} (then {@link #errorCode}),
     * {@link Fault#GENERAL_PROTECTION}, or {@link #ABSENT} (then {@link #absentGfn}).
     *
     * @throws GuestFaultException MACHINE_CHECK when a guest table lies beyond guest memory
     */
    int walk(ControlRegisters regs, long cr3, long va, int access) {
        levels = regs.levels();
        long top = va >> (levels == 5 ? 56 : 47);
        if (top != 0 && top != -1) {
            return Fault.GENERAL_PROTECTION;
        }
        final boolean nxe = regs.nxe();
        final boolean write = Access.isWrite(access);
        long table = (cr3 & addressMask) >>> MachineMemory.FRAME_SHIFT;
        long accRw = Pte.RW;
        long accUs = Pte.US;
        boolean nx = false;
        int level = levels;
        while (true) {
            if (absent(table)) {
                absentGfn = table;
                return ABSENT;
            }
            if (shared(table)) {
                sharedGfn = table;
                return SHARED_TABLE;
            }
            long hpa = (vm.populate(table) << MachineMemory.FRAME_SHIFT) + ((long) Pte.index(va, level) << 3);
            long e = memory.getLongVolatile(hpa);
            tableGfn[level] = table;
            entryHpa[level] = hpa;
            entry[level] = e;
            if ((e & Pte.P) == 0) {
                return pageFault(regs, access, 0);
            }
            boolean leaf = level == Pte.LEVEL_PT || ((level == Pte.LEVEL_PD || level == Pte.LEVEL_PDPT) && (e & Pte.PS) != 0);
            if ((e & Pte.reservedBits(level, leaf, nxe, reservedAddressBits)) != 0) {
                return pageFault(regs, access, Fault.PF_P | Fault.PF_RSVD);
            }
            long rw = accRw & e;
            long us = accUs & e;
            boolean entryNx = nx || (nxe && (e & Pte.NX) != 0);
            if (leaf) {
                if (!regs.permits(access, rw != 0, us != 0, entryNx)) {
                    return pageFault(regs, access, Fault.PF_P);
                }
                long need = write ? Pte.A | Pte.D : Pte.A;
                if ((e & need) != need) {
                    if (!memory.compareAndSetLong(hpa, e, e | need)) {
                        continue; // raced with another walker or the guest: re-read this level
                    }
                    vm.dirtyLog().markHost(table); // the engine wrote the guest's table
                    e |= need;
                    entry[level] = e;
                }
                int shift = Pte.levelShift(level);
                long pageMask = (1L << shift) - 1;
                gpa = (e & addressMask & ~pageMask) | (va & pageMask);
                leafLevel = level;
                return Fault.NONE;
            }
            if ((e & Pte.A) == 0) {
                if (!memory.compareAndSetLong(hpa, e, e | Pte.A)) {
                    continue;
                }
                vm.dirtyLog().markHost(table);
                entry[level] = e | Pte.A;
            }
            accRw = rw;
            accUs = us;
            nx = entryNx;
            table = (e & addressMask) >>> MachineMemory.FRAME_SHIFT;
            level--;
        }
    }

    /** Whether guest frame {@code gfn} exists but is not here (its p2m entry is neither empty nor present). */
    boolean absent(long gfn) {
        if (!vm.physicalMap().contains(gfn)) {
            return false; // populate reports it (MACHINE_CHECK)
        }
        long e = vm.physicalMap().entry(gfn);
        return e != P2mEntry.EMPTY && !P2mEntry.isPresent(e);
    }

    /** Whether guest frame {@code gfn} maps a frame shared copy-on-write. */
    boolean shared(long gfn) {
        return vm.physicalMap().contains(gfn) && P2mEntry.kind(vm.physicalMap().entry(gfn)) == P2mEntry.SHARED
            && P2mEntry.isPresent(vm.physicalMap().entry(gfn));
    }

    /** Whether every guest entry the last successful walk used still holds what it read (KVM's gpte re-check). */
    boolean unchanged() {
        for (int l = levels; l >= leafLevel; l--) {
            if (memory.getLongVolatile(entryHpa[l]) != entry[l]) {
                return false;
            }
        }
        return true;
    }

    private int pageFault(ControlRegisters regs, int access, int bits) {
        errorCode = regs.pageFaultErrorCode(access, bits);
        return Fault.PAGE_FAULT;
    }
}
