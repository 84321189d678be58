package io.vmpage.mmu;

/**
 * One logical processor's memory-management hardware: control registers, the current VPID and EPTP
 * (what a VM entry loads from the VMCS), a TLB, paging-structure caches, a nested guest-physical cache,
 * and the walker. {@link #translate} is the hardware path: TLB, then walk, then fill.
 *
 * <p>The instructions software uses to keep the TLB coherent are here with their architectural scope
 * (SDM 4.10.4, 29.4.3): {@link #movToCr3} (with and without the PCID no-flush bit), {@link #invlpg},
 * {@link #invpcid}, {@link #invvpid}, {@link #invept}. A control-register write that changes how
 * translations are computed (CR0.WP, CR4.PGE/PCIDE/LA57/SMEP, EFER.NXE) flushes this VPID's entries,
 * which is at least what hardware requires. Over-invalidation is always architecturally allowed; keeping
 * a stale entry after these operations never is.
 *
 * <p>Not thread-safe: each vCPU thread owns one. Translations do not allocate and take no lock; walks
 * update A/D bits in shared tables with CAS, so several Mmus may walk the same tables at once.
 */
public final class Mmu {
    public static final int INVPCID_ADDRESS = 0;
    public static final int INVPCID_SINGLE_CONTEXT = 1;
    public static final int INVPCID_ALL_INCLUDING_GLOBAL = 2;
    public static final int INVPCID_ALL_EXCLUDING_GLOBAL = 3;

    private static final long PAGING_CR0_BITS = ControlRegisters.CR0_WP | ControlRegisters.CR0_PG;
    private static final long PAGING_CR4_BITS = ControlRegisters.CR4_PGE | ControlRegisters.CR4_PCIDE
        | ControlRegisters.CR4_LA57 | ControlRegisters.CR4_SMEP;

    private final MachineMemory memory;
    private final MmuConfig config;
    private final ControlRegisters regs = new ControlRegisters();
    private final Tlb tlb;
    private final Walker walker;
    private final Walker uncachedWalker;
    private final MmuStats stats = new MmuStats();
    private final Translation last = new Translation();
    private int vpid;
    private long eptp;
    /** VPID << 12 | current PCID: recomputed on every write that changes either. */
    private int tag;

    public Mmu(MachineMemory memory, MmuConfig config) {
        this.memory = memory;
        this.config = config;
        this.tlb = config.tlbEnabled()
            ? new Tlb(config.tlbSets(), config.tlbWays(), config.largeTlbSets(), config.largeTlbWays()) : null;
        PagingStructureCache psc = config.pscEntries() > 0 ? new PagingStructureCache(config.pscEntries()) : null;
        NestedCache nested = config.nestedEntries() > 0 ? new NestedCache(config.nestedEntries()) : null;
        this.walker = new Walker(memory, config.maxPhysAddrBits(), psc, nested, stats);
        this.uncachedWalker = new Walker(memory, config.maxPhysAddrBits(), null, null, new MmuStats());
    }

    public Mmu(MachineMemory memory) {
        this(memory, MmuConfig.defaults());
    }

    public MachineMemory memory() {
        return memory;
    }

    public MmuConfig config() {
        return config;
    }

    /** The registers (read-only view; write through the methods below). */
    public ControlRegisters registers() {
        return regs;
    }

    public MmuStats stats() {
        return stats;
    }

    /** The TLB, or null when the configuration switched it off. */
    public Tlb tlb() {
        return tlb;
    }

    // ------------------------------------------------------------------ translation

    /**
     * Translates {@code va} for {@code access} ({@link Access} bits) through the TLB, walking on a
     * miss. Returns the host-physical address, or -1 on a fault, whose details are then in
     * {@link #lastTranslation()}. A TLB hit does not touch {@link #lastTranslation()}.
     */
    public long translate(long va, int access) {
        if (tlb != null) {
            long hpa = tlb.lookup(va, access, tag);
            if (hpa >= 0) {
                stats.tlbHits++; // the only store on the hit path: translations are derived from the counts
                return hpa;
            }
            stats.tlbMisses++;
        } else {
            stats.translationsWithoutTlb++;
        }
        return walkAndFill(va, access);
    }

    /** As {@link #translate(long, int)}, and describes the outcome, hit or walk, in {@code out}. */
    public int translate(long va, int access, Translation out) {
        if (tlb == null) {
            stats.translationsWithoutTlb++;
        } else {
            long hpa = tlb.lookup(va, access, tag);
            if (hpa >= 0) {
                stats.tlbHits++;
                out.reset(va, access);
                out.hpa = hpa;
                out.tlbHit = true;
                out.pageShift = Pte.SHIFT_4K;
                return Fault.NONE;
            }
            stats.tlbMisses++;
        }
        walkAndFill(va, access);
        out.copyFrom(last);
        return out.fault;
    }

    private long walkAndFill(long va, int access) {
        int fault = walker.walk(regs, eptp, tag, va, access, last);
        if (fault != Fault.NONE) {
            if (fault == Fault.PAGE_FAULT && tlb != null) {
                // A #PF invalidates the faulting address's entries (SDM 4.10.4.2).
                tlb.invalidatePage(va, vpid, regs.pcid(), true);
            }
            return -1;
        }
        if (tlb != null) {
            tlb.insert(va, tag, last.hpa, last.pageShift, walker.allowedMask(), walker.leafGlobal && regs.pge(), walker.guestShift);
        }
        return last.hpa;
    }

    /** Details of the last walk (or fault). */
    public Translation lastTranslation() {
        return last;
    }

    /**
     * A walk that uses no TLB, no paging-structure cache and no nested cache and fills nothing: what the
     * tables in memory say right now (setting A/D as any walk does). The reference a cached translation
     * is checked against.
     */
    public int walkUncached(long va, int access, Translation out) {
        return uncachedWalker.walk(regs, eptp, tag, va, access, out);
    }

    // ------------------------------------------------------------------ VM entry state

    /** Loads the VPID and EPTP of the vCPU about to run (eptp 0: no EPT, VPID 0: the host). */
    public void enter(int vpid, long eptp) {
        if (vpid < 0 || vpid > 0xFFFF) {
            throw new IllegalArgumentException("VPID " + vpid + " must be between 0 and 65535");
        }
        if (eptp != 0) {
            long memoryType = eptp & 7;
            if (Ept.levels(eptp) == 0 || (memoryType != 0 && memoryType != Ept.EPTP_MEMORY_TYPE_WB)
                || (eptp & (0xF80L | ~physicalAddressMask())) != 0) {
                throw new IllegalArgumentException("EPTP " + MachineMemory.hex(eptp) + " is invalid (VM entry fails): walk"
                    + " length must be 4 or 5 levels, memory type UC or WB, bits 11:7 and above MAXPHYADDR clear");
            }
        }
        this.vpid = vpid;
        this.eptp = eptp;
        retag();
    }

    public int vpid() {
        return vpid;
    }

    public long eptp() {
        return eptp;
    }

    /** Bits (MAXPHYADDR-1):0. */
    private long physicalAddressMask() {
        return (1L << config.maxPhysAddrBits()) - 1;
    }

    private void retag() {
        tag = vpid << 12 | regs.pcid();
    }

    // ------------------------------------------------------------------ register writes

    public void setCr0(long value) {
        long changed = regs.cr0 ^ value;
        regs.cr0 = value;
        regs.registersWritten();
        if ((changed & PAGING_CR0_BITS) != 0) {
            flushContext();
        }
    }

    public void setCr4(long value) {
        if ((value & ControlRegisters.CR4_PCIDE) != 0 && !regs.pcide() && (regs.cr3 & ControlRegisters.CR3_PCID_MASK) != 0) {
            throw new IllegalArgumentException("setting CR4.PCIDE needs CR3[11:0] = 0 (#GP)");
        }
        long changed = regs.cr4 ^ value;
        regs.cr4 = value;
        regs.registersWritten();
        retag();
        if ((changed & PAGING_CR4_BITS) != 0) {
            flushContext();
        }
    }

    public void setEfer(long value) {
        long changed = regs.efer ^ value;
        regs.efer = value;
        regs.registersWritten();
        if ((changed & ControlRegisters.EFER_NXE) != 0) {
            flushContext();
        }
    }

    /**
     * MOV to CR3. Without CR4.PCIDE: invalidates PCID 0's non-global entries. With CR4.PCIDE: bit 63
     * clear invalidates the new PCID's non-global entries; bit 63 set keeps them (and is not stored).
     * Paging-structure-cache entries of that PCID go unless the no-flush bit keeps them.
     */
    public void movToCr3(long value) {
        long reserved = ~physicalAddressMask() & ~(regs.pcide() ? ControlRegisters.CR3_NO_FLUSH : 0);
        if ((value & reserved) != 0) {
            throw new IllegalArgumentException("MOV to CR3 of " + MachineMemory.hex(value)
                + " sets reserved bits (#GP): bits above MAXPHYADDR " + config.maxPhysAddrBits() + " must be clear");
        }
        boolean noFlush = regs.pcide() && (value & ControlRegisters.CR3_NO_FLUSH) != 0;
        regs.cr3 = value & ~ControlRegisters.CR3_NO_FLUSH;
        retag();
        if (!noFlush) {
            if (tlb != null) {
                tlb.invalidatePcid(vpid, regs.pcid());
            }
            if (walker.psc != null) {
                walker.psc.invalidateTag(tag);
            }
        }
    }

    /** INVLPG: this page's entries of every size for the current PCID and global ones; all PSC entries of the PCID. */
    public void invlpg(long va) {
        if (tlb != null) {
            tlb.invalidatePage(va, vpid, regs.pcid(), true);
        }
        if (walker.psc != null) {
            walker.psc.invalidateTag(tag);
        }
    }

    /** INVPCID with its four types ({@code INVPCID_*}). */
    public void invpcid(int type, int pcid, long va) {
        switch (type) {
            case INVPCID_ADDRESS:
                if (tlb != null) {
                    tlb.invalidatePage(va, vpid, pcid, false);
                }
                if (walker.psc != null) {
                    walker.psc.invalidateTag(vpid << 12 | pcid);
                }
                break;
            case INVPCID_SINGLE_CONTEXT:
                if (tlb != null) {
                    tlb.invalidatePcid(vpid, pcid);
                }
                if (walker.psc != null) {
                    walker.psc.invalidateTag(vpid << 12 | pcid);
                }
                break;
            case INVPCID_ALL_INCLUDING_GLOBAL:
                flushContext();
                break;
            case INVPCID_ALL_EXCLUDING_GLOBAL:
                if (tlb != null) {
                    tlb.invalidateVpidNonGlobal(vpid);
                }
                if (walker.psc != null) {
                    walker.psc.invalidateVpid(vpid);
                }
                break;
            default:
                throw new IllegalArgumentException("INVPCID type " + type + " must be 0..3 (#GP)");
        }
    }

    /** INVVPID single-context: every linear and combined mapping of {@code vpid}. */
    public void invvpid(int vpid) {
        if (tlb != null) {
            tlb.invalidateVpid(vpid);
        }
        if (walker.psc != null) {
            walker.psc.invalidateVpid(vpid);
        }
    }

    /**
     * INVEPT single-context: the guest-physical mappings cached for {@code eptp} and every combined
     * mapping derived through an EPT (this model drops all combined TLB and paging-structure entries,
     * an allowed over-invalidation).
     */
    public void invept(long eptp) {
        if (walker.nested != null) {
            walker.nested.invalidate(eptp);
        }
        if (tlb != null) {
            tlb.flushAll();
        }
        if (walker.psc != null) {
            walker.psc.clear();
        }
    }

    /** Everything: TLB, paging-structure caches, nested cache (INVEPT all-context plus INVVPID all). */
    public void flushAll() {
        if (tlb != null) {
            tlb.flushAll();
        }
        if (walker.psc != null) {
            walker.psc.clear();
        }
        if (walker.nested != null) {
            walker.nested.clear();
        }
    }

    /** All entries of the current VPID, global ones included. */
    private void flushContext() {
        invvpid(vpid);
    }
}
