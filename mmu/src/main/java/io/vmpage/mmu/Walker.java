package io.vmpage.mmu;

/**
 * The page walker of one logical processor: 4- and 5-level x86-64 paging, optionally nested under a
 * 4- or 5-level EPT (the 2D walk, where every guest paging-structure reference is itself translated
 * through EPT). Reads level by level, the way the SDM's pseudo-walk does, and reports exactly what
 * hardware reports: #PF with its error code, #GP for a non-canonical address, EPT violation with its
 * exit qualification, EPT misconfiguration.
 *
 * <p>Rules followed (Intel SDM vol. 3A ch. 4, vol. 3C ch. 29):
 * <ul>
 * <li>Permissions AND over the levels (R/W, U/S); NX ORs, and only counts with EFER.NXE.</li>
 * <li>Supervisor writes honour R/W only with CR0.WP; SMEP faults supervisor fetches from user pages.</li>
 * <li>A is set in each entry used, with a compare-and-set that retries on a lost race; the leaf's A
 *     (and D, on a write) is set only when the access is permitted. Hardware does not set D on a write
 *     that faults.</li>
 * <li>Reserved bits (address bits at or above MAXPHYADDR, NX without NXE, PS in a PML4E/PML5E, the low
 *     address bits of a large page) give #PF with RSVD; in EPT they give a misconfiguration, as does
 *     write-without-read or memory type 2, 3 or 7.</li>
 * <li>Nested: guest paging-structure reads need EPT read permission; A/D updates to guest entries are
 *     writes and need EPT write permission. With EPTP.AD, every guest paging-structure access is treated
 *     as a write (SDM 29.3.3.2) and an EPT violation it causes sets both the read and the write bit of
 *     the exit qualification (without EPTP.AD such a read reports the read bit alone); EPT A flags are
 *     set on every EPT entry used and the EPT D flag on a write.</li>
 * </ul>
 * Each paging-structure entry read counts as one memory reference: a cold 4-over-4 walk makes 24,
 * 5-over-5 makes 35 (Bhargava et al., ASPLOS 2008).
 *
 * <p>Not thread-safe: one per logical processor. Several walkers may walk (and set A/D in) the same
 * tables concurrently: entries are read with volatile loads and updated only by CAS.
 */
final class Walker {
    private static final int MAX_PHYS_BITS_LIMIT = 52;

    private final MachineMemory memory;
    private final long memorySize;
    /** Bits (MAXPHYADDR-1):12: the address field this processor honours. */
    private final long addressMask;
    /** Bits 51:MAXPHYADDR: reserved in every entry. */
    private final long reservedAddressBits;
    final PagingStructureCache psc;
    final NestedCache nested;
    final MmuStats stats;

    // Outputs of the last EPT translation (avoid allocating a result object per reference).
    private long eptPerms;
    private int eptShift;
    private boolean eptDirty;

    // Outputs of the last successful walk, read by the TLB fill.
    /** Accesses the guest leaf lets a TLB entry serve ({@link #guestAllowedMask}). */
    private int guestAllowed;
    /** Accesses the EPT leaf lets a TLB entry serve ({@link #eptAllowedMask}); all without EPT. */
    private int eptAllowed;
    int guestShift;
    boolean leafGlobal;

    Walker(MachineMemory memory, int maxPhysAddrBits, PagingStructureCache psc, NestedCache nested, MmuStats stats) {
        if (maxPhysAddrBits < 32 || maxPhysAddrBits > MAX_PHYS_BITS_LIMIT) {
            throw new IllegalArgumentException("MAXPHYADDR " + maxPhysAddrBits + " must be between 32 and 52");
        }
        if (memory.size() > (1L << maxPhysAddrBits)) {
            throw new IllegalArgumentException("machine memory of " + MachineMemory.hex(memory.size())
                + " bytes does not fit a MAXPHYADDR of " + maxPhysAddrBits + " bits");
        }
        this.memory = memory;
        this.memorySize = memory.size();
        this.addressMask = ((1L << maxPhysAddrBits) - 1) & Pte.ADDRESS_MASK;
        this.reservedAddressBits = Pte.ADDRESS_MASK & ~addressMask;
        this.psc = psc;
        this.nested = nested;
        this.stats = stats;
    }

    /**
     * Translates {@code va} for {@code access}. {@code eptp} = 0 means no EPT (1D walk; guest-physical
     * is host-physical). {@code tag} (VPID << 12 | PCID) keys the paging-structure caches.
     *
     * @return the {@link Fault} code, also stored in {@code out}
     */
    int walk(ControlRegisters regs, long eptp, int tag, long va, int access, Translation out) {
        if (walkWarm(regs, eptp, tag, va, access, out) >= 0) {
            return Fault.NONE;
        }
        out.reset(va, access);
        stats.walks++;
        int result = walk0(regs, eptp, tag, va, access, out);
        stats.walkRefs += out.refs;
        if (result != Fault.NONE) {
            stats.faults++;
        }
        return result;
    }

    /**
     * The warm walk, which {@link #walk} tries first: a PDE-cache hit leaves one guest PTE to read (SDM
     * 4.10.3.2), and with EPT a nested-cache hit translates the page it maps, so no EPT entry is read.
     * Taken only when nothing has to be written or reported: the PTE is present, has no reserved bit set,
     * permits the access, already has A (and D for a write), and the nested entry permits the access
     * (with EPT D already set for a write under EPT A/D). The result, the counters and {@code out} are
     * then what the general walk produces on the same path. Otherwise it returns -1 having changed
     * nothing, and the general walk runs.
     *
     * @return the host-physical address, or -1 when the general walk must run
     */
    private long walkWarm(ControlRegisters regs, long eptp, int tag, long va, int access, Translation out) {
        // Two small parts rather than one large method: each stays under the JIT's inlining limit, so the
        // warm path compiles into walk() without further calls.
        long gpa = warmGuestLeaf(regs, tag, va, access);
        if (gpa < 0) {
            return -1;
        }
        long hpa;
        if (eptp == 0) {
            hpa = gpa;
            eptAllowed = ALL_ACCESSES;
            stats.warmWalks++;
        } else {
            hpa = warmNested(eptp, gpa, access);
            if (hpa < 0) {
                return -1;
            }
            stats.warmNestedWalks++;
        }
        guestShift = Pte.SHIFT_4K;
        out.warm(va, access, gpa, hpa);
        return hpa;
    }

    /**
     * The guest half of {@link #walkWarm}: the PDE-cache hit and the PTE. Returns the guest-physical
     * address and leaves the leaf's TLB rights in {@link #guestAllowed} and {@link #leafGlobal}, or -1.
     */
    private long warmGuestLeaf(ControlRegisters regs, int tag, long va, int access) {
        PagingStructureCache pdeCache = psc;
        int slot;
        if (pdeCache == null || (slot = pdeCache.find(Pte.LEVEL_PD, va, tag)) < 0) {
            return -1;
        }
        long entryHpa = pdeCache.tableHpa(slot) + ((long) Pte.index(va, Pte.LEVEL_PT) << 3);
        if (entryHpa >= memorySize) {
            return -1;
        }
        long e = memory.getLongVolatileUnchecked(entryHpa);
        long need = Access.isWrite(access) ? Pte.P | Pte.A | Pte.D : Pte.P | Pte.A;
        if ((e & need) != need || (e & Pte.reservedBits(Pte.LEVEL_PT, true, regs.nxe(), reservedAddressBits)) != 0) {
            return -1;
        }
        // Index into ControlRegisters.permissionTable without branches: R/W and U/S ANDed with the
        // upper levels' (PSC flags keep them at the entry's bit positions), NX ORed (flags bit 0; an NX
        // bit without EFER.NXE was rejected above as reserved).
        long f = pdeCache.flags(slot);
        int permitted = (int) (regs.permissionTable >>> (((e & f & (Pte.RW | Pte.US)) | ((e >>> 63 | f) & 1)) << 3)) & 0xFF;
        if ((permitted & (1 << Access.index(access))) == 0) {
            return -1;
        }
        guestAllowed = permitted & ACCESS_INDEXES & ((e & Pte.D) != 0 ? ALL_ACCESSES : ~WRITES);
        leafGlobal = (e & Pte.G) != 0;
        return (e & addressMask) | (va & MachineMemory.FRAME_OFFSET_MASK);
    }

    /** The EPT half of {@link #walkWarm}: a nested-cache hit that permits the access, or -1. */
    private long warmNested(long eptp, long gpa, int access) {
        long v;
        if (nested == null || (v = nested.find(eptp, gpa)) < 0) {
            return -1;
        }
        int allowed = EPT_ALLOWED[(int) (v & (NestedCache.V_DIRTY | Ept.RWX)) | ((eptp & Ept.EPTP_AD) == 0 ? 8 : 0)];
        if ((allowed & (1 << Access.index(access))) == 0) {
            return -1;
        }
        eptAllowed = allowed;
        return (v & ~MachineMemory.FRAME_OFFSET_MASK) | (gpa & MachineMemory.FRAME_OFFSET_MASK);
    }

    private int walk0(ControlRegisters regs, long eptp, int tag, long va, int access, Translation out) {
        int levels = regs.levels();
        long top = va >> (levels == 5 ? 56 : 47);
        if (top != 0 && top != -1) {
            out.faultAddress = va;
            return out.fault = Fault.GENERAL_PROTECTION;
        }
        final boolean isNested = eptp != 0;
        final boolean eptAd = (eptp & Ept.EPTP_AD) != 0;
        // A guest paging-structure read is a data read; with EPT A/D it is treated as a write, and an EPT
        // violation it causes reports both bits 0 and 1 (SDM 29.3.3.2 and the exit qualification's bit 0).
        final long tableQual = eptAd ? Fault.QUAL_READ | Fault.QUAL_WRITE : Fault.QUAL_READ;
        final boolean nxe = regs.nxe();
        final boolean write = Access.isWrite(access);

        int level = levels;
        long tableGpa = regs.tableBase() & addressMask;
        long tableHpa = isNested ? -1 : tableGpa;
        long tablePerms = Ept.RWX; // EPT permissions of the current table's page (RWX without EPT)
        long accRw = Pte.RW;
        long accUs = Pte.US;
        boolean nx = false;

        if (psc != null) {
            for (int l = Pte.LEVEL_PD; l <= levels; l++) {
                int slot = psc.find(l, va, tag);
                if (slot >= 0) {
                    level = l - 1;
                    tableGpa = psc.tableGpa(slot);
                    tableHpa = psc.tableHpa(slot);
                    int f = psc.flags(slot);
                    accRw = (f & PagingStructureCache.F_RW) != 0 ? Pte.RW : 0;
                    accUs = (f & PagingStructureCache.F_US) != 0 ? Pte.US : 0;
                    nx = (f & PagingStructureCache.F_NX) != 0;
                    tablePerms = (f >>> PagingStructureCache.F_TABLE_PERMS_SHIFT) & Ept.RWX;
                    break;
                }
            }
            if (level == levels) {
                stats.pscMisses++;
            } else {
                stats.pscHits++;
            }
        }

        int pendingPscLevel = 0;
        long gpa;
        int shift;
        while (true) {
            long entryGpa = tableGpa + ((long) Pte.index(va, level) << 3);
            long entryHpa;
            if (tableHpa >= 0) {
                entryHpa = tableHpa + (entryGpa - tableGpa);
            } else {
                long hpa = ept(eptp, entryGpa, tableQual, Fault.QUAL_GLA_VALID, out);
                if (hpa < 0) {
                    return out.fault;
                }
                entryHpa = hpa;
                tableHpa = hpa - (entryGpa - tableGpa);
                tablePerms = eptPerms;
            }
            if (pendingPscLevel != 0) {
                psc.put(pendingPscLevel, va, tag, tableGpa, tableHpa, pscFlags(accRw, accUs, nx, tablePerms));
                pendingPscLevel = 0;
            }
            if (entryHpa >= memorySize) {
                out.faultAddress = entryHpa;
                return out.fault = Fault.MACHINE_CHECK;
            }
            long e = memory.getLongVolatileUnchecked(entryHpa);
            out.refs++;
            if ((e & Pte.P) == 0) {
                return pageFault(out, regs, va, access, 0);
            }
            boolean leaf = level == Pte.LEVEL_PT || ((level == Pte.LEVEL_PD || level == Pte.LEVEL_PDPT) && (e & Pte.PS) != 0);
            if ((e & Pte.reservedBits(level, leaf, nxe, reservedAddressBits)) != 0) {
                return pageFault(out, regs, va, access, Fault.PF_P | Fault.PF_RSVD);
            }
            long rw = accRw & e;
            long us = accUs & e;
            boolean entryNx = nx || (nxe && (e & Pte.NX) != 0);
            if (leaf) {
                if (!regs.permits(access, rw != 0, us != 0, entryNx)) {
                    return pageFault(out, regs, va, access, Fault.PF_P);
                }
                long need = write ? Pte.A | Pte.D : Pte.A;
                if ((e & need) != need) {
                    if (isNested && (tablePerms & Ept.W) == 0) {
                        return eptViolationOnTable(out, entryGpa, tablePerms, eptAd);
                    }
                    if (!memory.compareAndSetLongUnchecked(entryHpa, e, e | need)) {
                        continue; // lost a race with another walker or the guest: re-read this level
                    }
                    e |= need;
                }
                shift = Pte.levelShift(level);
                long pageMask = (1L << shift) - 1;
                gpa = (e & addressMask & ~pageMask) | (va & pageMask);
                accRw = rw;
                accUs = us;
                nx = entryNx;
                guestShift = shift;
                leafGlobal = (e & Pte.G) != 0;
                guestAllowed = guestAllowedMask(regs, rw != 0, us != 0, entryNx, (e & Pte.D) != 0);
                break;
            }
            if ((e & Pte.A) == 0) {
                if (isNested && (tablePerms & Ept.W) == 0) {
                    return eptViolationOnTable(out, entryGpa, tablePerms, eptAd);
                }
                if (!memory.compareAndSetLongUnchecked(entryHpa, e, e | Pte.A)) {
                    continue;
                }
            }
            accRw = rw;
            accUs = us;
            nx = entryNx;
            tableGpa = e & addressMask;
            tableHpa = isNested ? -1 : tableGpa;
            if (psc != null) {
                pendingPscLevel = level;
            }
            level--;
        }

        out.gpa = gpa;
        if (!isNested) {
            out.hpa = gpa;
            out.pageShift = shift;
            eptAllowed = ALL_ACCESSES;
            return Fault.NONE;
        }
        long qual = Access.isFetch(access) ? Fault.QUAL_FETCH : write ? Fault.QUAL_WRITE : Fault.QUAL_READ;
        long hpa = ept(eptp, gpa, qual, Fault.QUAL_GLA_VALID | Fault.QUAL_FINAL_TRANSLATION, out);
        if (hpa < 0) {
            return out.fault;
        }
        out.hpa = hpa;
        out.pageShift = Math.min(shift, eptShift);
        eptAllowed = eptAllowedMask(eptPerms, !eptAd || eptDirty);
        return Fault.NONE;
    }

    /**
     * The accesses a TLB entry for the last successful walk may serve (8-bit mask over
     * {@link Access#index}): what the guest entry permits under the current CR0.WP/SMEP, what the EPT
     * permits, and writes only when no D flag still has to be set.
     */
    int allowedMask() {
        return guestAllowed & eptAllowed;
    }

    /**
     * Translates a guest-physical address through the EPT for an access of kind {@code qual} (the
     * qualification's read, write or fetch bit; read and write together for a guest paging-structure
     * access under EPT A/D, which needs both permissions). Returns the host-physical address, or -1 after
     * filling {@code out} with the EPT violation or misconfiguration. Leaves the leaf's permissions, size
     * and dirty state in {@link #eptPerms}, {@link #eptShift}, {@link #eptDirty}.
     */
    private long ept(long eptp, long gpa, long qual, long qualExtra, Translation out) {
        final boolean ad = (eptp & Ept.EPTP_AD) != 0;
        final boolean write = (qual & Fault.QUAL_WRITE) != 0;
        if (nested != null) {
            long v = nested.find(eptp, gpa);
            if (v >= 0 && eptPermits(v, qual) && (!write || !ad || (v & NestedCache.V_DIRTY) != 0)) {
                stats.nestedHits++;
                eptPerms = v & Ept.RWX;
                eptShift = Pte.SHIFT_4K + 9 * (int) ((v >>> NestedCache.V_SIZE_SHIFT) & 3);
                eptDirty = (v & NestedCache.V_DIRTY) != 0;
                return (v & ~MachineMemory.FRAME_OFFSET_MASK) | (gpa & MachineMemory.FRAME_OFFSET_MASK);
            }
            stats.nestedMisses++;
        }
        int levels = Ept.levels(eptp);
        if (levels == 0) {
            return eptMisconfig(out, gpa);
        }
        if ((gpa >>> (Pte.SHIFT_4K + 9 * levels)) != 0) {
            return eptViolation(out, gpa, qual | qualExtra);
        }
        long table = eptp & addressMask;
        long perms = Ept.RWX;
        int level = levels;
        while (true) {
            long entryHpa = table + ((long) Pte.index(gpa, level) << 3);
            if (entryHpa >= memorySize) {
                out.faultAddress = entryHpa;
                out.fault = Fault.MACHINE_CHECK;
                return -1;
            }
            long e = memory.getLongVolatileUnchecked(entryHpa);
            out.refs++;
            long rwx = e & Ept.RWX;
            if (rwx == 0) {
                return eptViolation(out, gpa, qual | qualExtra);
            }
            if ((rwx & Ept.R) == 0 && (rwx & Ept.W) != 0) {
                return eptMisconfig(out, gpa);
            }
            boolean leaf = level == 1 || ((level == 2 || level == 3) && (e & Ept.PS) != 0);
            if ((e & eptReservedBits(level, leaf)) != 0) {
                return eptMisconfig(out, gpa);
            }
            if (leaf) {
                long mt = (e & Ept.MEMORY_TYPE_MASK) >>> Ept.MEMORY_TYPE_SHIFT;
                if (mt == 2 || mt == 3 || mt == 7) {
                    return eptMisconfig(out, gpa);
                }
            }
            long acc = perms & rwx;
            if (!leaf) {
                if (ad && (e & Ept.A) == 0 && !memory.compareAndSetLongUnchecked(entryHpa, e, e | Ept.A)) {
                    continue;
                }
                perms = acc;
                table = e & addressMask;
                level--;
                continue;
            }
            if (!eptPermits(acc, qual)) {
                return eptViolation(out, gpa, qual | qualExtra | (acc << Fault.QUAL_PERMISSIONS_SHIFT));
            }
            if (ad) {
                long need = write ? Ept.A | Ept.D : Ept.A;
                if ((e & need) != need) {
                    if (!memory.compareAndSetLongUnchecked(entryHpa, e, e | need)) {
                        continue;
                    }
                    e |= need;
                }
            }
            int shift = Pte.levelShift(level);
            long pageMask = (1L << shift) - 1;
            long hpa = (e & addressMask & ~pageMask) | (gpa & pageMask);
            eptPerms = acc;
            eptShift = shift;
            eptDirty = (e & Ept.D) != 0;
            if (nested != null) {
                nested.put(eptp, gpa, (hpa & ~MachineMemory.FRAME_OFFSET_MASK) | acc | (eptDirty ? NestedCache.V_DIRTY : 0)
                    | ((long) (level - 1) << NestedCache.V_SIZE_SHIFT));
            }
            return hpa;
        }
    }

    // ------------------------------------------------------------------ rules

    /** Bits of {@link Access#index} values that name an access (a fetch is never a write). */
    private static final int ACCESS_INDEXES = 0x5F;
    private static final int ALL_ACCESSES = 0xFF;
    /** Indexes 1 and 3: supervisor and user writes. */
    private static final int WRITES = 0x0A;

    /** 8-bit mask over {@link Access#index} of the accesses a TLB entry may serve without a walk. */
    private static int guestAllowedMask(ControlRegisters regs, boolean rw, boolean us, boolean nx, boolean dirty) {
        return regs.permittedAccesses(rw, us, nx) & ACCESS_INDEXES & (dirty ? ALL_ACCESSES : ~WRITES);
    }

    /** {@link #eptAllowedMask} by index {@code dirty << 3 | X << 2 | W << 1 | R} (the nested-cache value's low bits). */
    private static final int[] EPT_ALLOWED = new int[16];

    static {
        for (int i = 0; i < 16; i++) {
            EPT_ALLOWED[i] = eptAllowedMask(i & 7, (i & 8) != 0);
        }
    }

    /**
     * As {@link #guestAllowedMask} for EPT rights ({@code perms} bits 2:0 X/W/R): reads need R, writes W
     * (and D set when {@code dirty} is false under EPT A/D), fetches X.
     */
    private static int eptAllowedMask(long perms, boolean dirty) {
        return (int) (-(perms & 1) & 0x05 | -((perms >>> 1) & (dirty ? 1 : 0)) & WRITES | -((perms >>> 2) & 1) & 0xF0);
    }

    private static boolean eptPermits(long perms, long qual) {
        if ((qual & Fault.QUAL_READ) != 0 && (perms & Ept.R) == 0) {
            return false;
        }
        if ((qual & Fault.QUAL_WRITE) != 0 && (perms & Ept.W) == 0) {
            return false;
        }
        return (qual & Fault.QUAL_FETCH) == 0 || (perms & Ept.X) != 0;
    }

    private long eptReservedBits(int level, boolean leaf) {
        long bits = reservedAddressBits;
        if (level >= 4) {
            bits |= 0xF8L; // bits 7:3 (PS included) are reserved in an EPT PML4E/PML5E
        } else if (!leaf) {
            bits |= 0x78L; // bits 6:3 are reserved in entries that reference a table
        } else if (level == 3) {
            bits |= 0x3FFF_F000L; // 1 GiB page: address bits 29:12
        } else if (level == 2) {
            bits |= 0x1F_F000L; // 2 MiB page: address bits 20:12
        }
        return bits;
    }

    private static int pscFlags(long rw, long us, boolean nx, long tablePerms) {
        return (rw != 0 ? PagingStructureCache.F_RW : 0) | (us != 0 ? PagingStructureCache.F_US : 0)
            | (nx ? PagingStructureCache.F_NX : 0) | (int) (tablePerms << PagingStructureCache.F_TABLE_PERMS_SHIFT);
    }

    // ------------------------------------------------------------------ fault reports

    private static int pageFault(Translation out, ControlRegisters regs, long va, int access, int bits) {
        out.errorCode = regs.pageFaultErrorCode(access, bits);
        out.faultAddress = va;
        return out.fault = Fault.PAGE_FAULT;
    }

    /**
     * The A/D update of a guest entry is a write to a guest paging structure the EPT does not let it write:
     * a data write (bit 1). With EPT A/D (reached when the table came from the paging-structure cache) it is
     * also a guest paging-structure access treated as a write, which reports bits 0 and 1.
     */
    private static int eptViolationOnTable(Translation out, long entryGpa, long tablePerms, boolean eptAd) {
        long access = eptAd ? Fault.QUAL_READ | Fault.QUAL_WRITE : Fault.QUAL_WRITE;
        eptViolation(out, entryGpa, access | Fault.QUAL_GLA_VALID | (tablePerms << Fault.QUAL_PERMISSIONS_SHIFT));
        return out.fault;
    }

    private static long eptViolation(Translation out, long gpa, long qualification) {
        out.fault = Fault.EPT_VIOLATION;
        out.faultAddress = gpa;
        out.qualification = qualification;
        return -1;
    }

    private static long eptMisconfig(Translation out, long gpa) {
        out.fault = Fault.EPT_MISCONFIG;
        out.faultAddress = gpa;
        return -1;
    }
}
