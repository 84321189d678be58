package io.vmpage.mmu;

/**
 * What a translation can end in, as the hardware reports it. A walker returns one of these codes and
 * fills the {@link Translation} with the details (error code, faulting address, exit qualification).
 *
 * <pre>
 *  #PF error code (page fault, vector 14)           EPT-violation exit qualification (SDM 28.2.1)
 *   bit 0 P     0 = not present, 1 = protection       bit 0  data read         bit 3 GPA readable
 *   bit 1 W/R   the access was a write                bit 1  data write        bit 4 GPA writable
 *   bit 2 U/S   the access was in user mode           bit 2  instruction fetch bit 5 GPA executable
 *   bit 3 RSVD  a reserved bit was set                bit 7  guest linear address valid
 *   bit 4 I/D   instruction fetch (NXE or SMEP on)    bit 8  1: access to the final translation,
 *                                                            0: to a guest paging-structure entry
 * </pre>
 * Bits 3-5 of the qualification are the logical AND over the EPT entries used of their R, W, X bits.
 * With EPT A/D enabled (EPTP bit 6), the processor's accesses to guest paging-structure entries are
 * treated as writes, and an EPT violation one causes sets both bit 0 and bit 1; without EPT A/D a read of
 * a guest paging-structure entry sets bit 0 alone, and a write to one to set its A/D flags bit 1.
 */
public final class Fault {
    /** Translation succeeded. */
    public static final int NONE = 0;
    /** #PF: error code and CR2 (the faulting linear address). */
    public static final int PAGE_FAULT = 1;
    /** #GP(0): the linear address is not canonical. */
    public static final int GENERAL_PROTECTION = 2;
    /** VM exit 48: EPT violation, with qualification, guest-physical and guest-linear address. */
    public static final int EPT_VIOLATION = 3;
    /** VM exit 49: EPT misconfiguration, with the guest-physical address. */
    public static final int EPT_MISCONFIG = 4;
    /**
     * #MC: a paging-structure reference to a physical address outside machine memory. Real platforms
     * abort such reads (all-ones) or raise a machine check; the model always reports it.
     */
    public static final int MACHINE_CHECK = 5;

    public static final int PF_P = 1;
    public static final int PF_W = 1 << 1;
    public static final int PF_U = 1 << 2;
    public static final int PF_RSVD = 1 << 3;
    public static final int PF_ID = 1 << 4;

    public static final long QUAL_READ = 1L;
    public static final long QUAL_WRITE = 1L << 1;
    public static final long QUAL_FETCH = 1L << 2;
    public static final int QUAL_PERMISSIONS_SHIFT = 3;
    public static final long QUAL_READABLE = 1L << 3;
    public static final long QUAL_WRITABLE = 1L << 4;
    public static final long QUAL_EXECUTABLE = 1L << 5;
    public static final long QUAL_GLA_VALID = 1L << 7;
    public static final long QUAL_FINAL_TRANSLATION = 1L << 8;

    private Fault() {
    }

    /** The snake_case name used in reports and JSON. */
    public static String name(int fault) {
        switch (fault) {
            case NONE: return "none";
            case PAGE_FAULT: return "page_fault";
            case GENERAL_PROTECTION: return "general_protection";
            case EPT_VIOLATION: return "ept_violation";
            case EPT_MISCONFIG: return "ept_misconfig";
            case MACHINE_CHECK: return "machine_check";
            default: return "unknown(" + fault + ")";
        }
    }
}
