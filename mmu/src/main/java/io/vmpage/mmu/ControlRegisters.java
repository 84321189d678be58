package io.vmpage.mmu;

/**
 * The paging-relevant architectural registers of one logical processor: the walk's inputs.
 *
 * <pre>
 *  CR0: bit 16 WP (supervisor writes honour R/W), bit 31 PG
 *  CR3 (CR4.PCIDE=0):  51..12 table base | 4 PCD | 3 PWT
 *  CR3 (CR4.PCIDE=1):  63 no-flush (MOV only, never stored) | 51..12 table base | 11..0 PCID
 *  CR4: bit 7 PGE (global pages), bit 12 LA57 (5-level paging), bit 17 PCIDE, bit 20 SMEP
 *  IA32_EFER: bit 11 NXE (execute-disable bit honoured)
 * </pre>
 * Long mode paging (CR0.PG, CR4.PAE, EFER.LME) is assumed on. Mutated only by the owning vCPU thread
 * (through {@link Mmu}, which applies the TLB invalidations the architecture ties to each write).
 */
public final class ControlRegisters {
    public static final long CR0_WP = 1L << 16;
    public static final long CR0_PG = 1L << 31;
    public static final long CR3_NO_FLUSH = 1L << 63;
    public static final long CR3_PCID_MASK = 0xFFFL;
    public static final long CR4_PGE = 1L << 7;
    public static final long CR4_LA57 = 1L << 12;
    public static final long CR4_PCIDE = 1L << 17;
    public static final long CR4_SMEP = 1L << 20;
    public static final long EFER_NXE = 1L << 11;

    long cr0 = CR0_PG | CR0_WP;
    long cr3;
    long cr4;
    long efer = EFER_NXE;
    /**
     * {@link #permits} for every input at once, for the walker's hot path: bit
     * {@code us << 5 | rw << 4 | nx << 3 | Access.index(access)} is set when the access is permitted
     * (R/W and U/S at their paging-entry bit positions shifted left by 3). Recomputed by
     * {@link #registersWritten} after every CR0, CR4 or EFER write.
     */
    long permissionTable = computePermissionTable();

    /** Called by the owner after writing CR0, CR4 or EFER. */
    void registersWritten() {
        permissionTable = computePermissionTable();
    }

    private long computePermissionTable() {
        long table = 0;
        for (int bit = 0; bit < 64; bit++) {
            int i = bit & 7;
            int access = ((i & 1) != 0 ? Access.WRITE : 0) | ((i & 2) != 0 ? Access.USER : 0) | ((i & 4) != 0 ? Access.FETCH : 0);
            if (permits(access, (bit & 16) != 0, (bit & 32) != 0, (bit & 8) != 0)) {
                table |= 1L << bit;
            }
        }
        return table;
    }

    /** The 8 permitted-access bits (indexed by {@link Access#index}) for a translation with these rights. */
    int permittedAccesses(boolean rw, boolean us, boolean nx) {
        return (int) (permissionTable >>> ((us ? 32 : 0) | (rw ? 16 : 0) | (nx ? 8 : 0))) & 0xFF;
    }

    public long cr0() {
        return cr0;
    }

    public long cr3() {
        return cr3;
    }

    public long cr4() {
        return cr4;
    }

    public long efer() {
        return efer;
    }

    public boolean wp() {
        return (cr0 & CR0_WP) != 0;
    }

    public boolean la57() {
        return (cr4 & CR4_LA57) != 0;
    }

    public boolean pcide() {
        return (cr4 & CR4_PCIDE) != 0;
    }

    public boolean smep() {
        return (cr4 & CR4_SMEP) != 0;
    }

    public boolean pge() {
        return (cr4 & CR4_PGE) != 0;
    }

    public boolean nxe() {
        return (efer & EFER_NXE) != 0;
    }

    /** Paging levels: 5 with CR4.LA57, else 4. */
    public int levels() {
        return la57() ? 5 : 4;
    }

    /** The current PCID: CR3[11:0] with CR4.PCIDE, else 0. */
    public int pcid() {
        return pcide() ? (int) (cr3 & CR3_PCID_MASK) : 0;
    }

    /** Physical address of the root table (PML4 or PML5). */
    public long tableBase() {
        return cr3 & Pte.ADDRESS_MASK;
    }

    /**
     * Whether a leaf reached with combined R/W, U/S (ANDed over the levels) and NX (ORed, counted only
     * with EFER.NXE) allows {@code access} ({@link Access} bits) under these registers: user accesses need
     * U/S; writes need R/W, except supervisor writes with CR0.WP clear; fetches need no NX, U/S for user
     * mode, and under CR4.SMEP a supervisor fetch from a user page faults (SDM 4.6).
     */
    public boolean permits(int access, boolean rw, boolean us, boolean nx) {
        boolean user = Access.isUser(access);
        if (Access.isFetch(access)) {
            if (nx) {
                return false;
            }
            return user ? us : !(us && smep());
        }
        if (user && !us) {
            return false;
        }
        if (Access.isWrite(access)) {
            return rw || (!user && !wp());
        }
        return true;
    }

    /**
     * The #PF error code for {@code access} with the P and RSVD bits given: W/R and U/S from the access,
     * I/D for a fetch only when EFER.NXE or CR4.SMEP is set (SDM 4.7).
     */
    public int pageFaultErrorCode(int access, int bits) {
        int code = bits | (access & (Fault.PF_W | Fault.PF_U));
        if (Access.isFetch(access) && (nxe() || smep())) {
            code |= Fault.PF_ID;
        }
        return code;
    }

    @Override
    public String toString() {
        return "CR0=" + MachineMemory.hex(cr0) + " CR3=" + MachineMemory.hex(cr3) + " CR4=" + MachineMemory.hex(cr4)
            + " EFER=" + MachineMemory.hex(efer);
    }
}
