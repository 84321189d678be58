package io.vmpage.mmu;

/**
 * Extended-page-table entry and EPTP formats (Intel SDM vol. 3C, 29.3.2).
 *
 * <pre>
 *  EPT entry
 *   63  62..52 51           M M-1                 12 11  10  9   8   7   6   5..3  2   1   0
 *  +---+------+---------------+----------------------+---+---+---+---+---+---+-----+---+---+---+
 *  |SVE| avl  | reserved (0)  | host-physical address| avl   | D | A |PS |IPAT| MT | X | W | R |
 *  +---+------+---------------+----------------------+---+---+---+---+---+---+-----+---+---+---+
 *   R/W/X: read, write, execute. R=W=X=0: not present (an access is an EPT violation).
 *   W=1 with R=0 is an EPT misconfiguration. MT (memory type, leaf only): 0 UC, 1 WC, 4 WT, 5 WP, 6 WB;
 *   2, 3 and 7 are misconfigurations. PS=1 in an EPT PDPTE maps 1 GiB, in an EPT PDE 2 MiB; PS is
 *   reserved in the EPT PML4E/PML5E. A (bit 8) and D (bit 9, leaf only) are written by the processor
 *   only when EPTP bit 6 enables accessed/dirty flags.
 *
 *  EPTP (the VMCS field pointing at the EPT root)
 *   63        52 51               12 11   7   6    5..3      2..0
 *  +------------+-------------------+-------+----+---------+--------+
 *  | reserved   | PML4/PML5 address | rsvd  | AD | walk-1  | MT (6) |
 *  +------------+-------------------+-------+----+---------+--------+
 *   walk-1: 3 for a 4-level EPT, 4 for 5-level. AD: enable EPT accessed/dirty flags.
 * </pre>
 */
public final class Ept {
    public static final long R = 1L;
    public static final long W = 1L << 1;
    public static final long X = 1L << 2;
    public static final long RWX = R | W | X;
    public static final int MEMORY_TYPE_SHIFT = 3;
    public static final long MEMORY_TYPE_MASK = 7L << MEMORY_TYPE_SHIFT;
    public static final long MEMORY_TYPE_UC = 0;
    public static final long MEMORY_TYPE_WB = 6L << MEMORY_TYPE_SHIFT;
    public static final long IPAT = 1L << 6;
    public static final long PS = 1L << 7;
    public static final long A = 1L << 8;
    public static final long D = 1L << 9;

    public static final long ADDRESS_MASK = Pte.ADDRESS_MASK;

    /** EPTP: bit 6 enables accessed and dirty flags. */
    public static final long EPTP_AD = 1L << 6;
    public static final int EPTP_WALK_SHIFT = 3;
    public static final long EPTP_WALK_MASK = 7L << EPTP_WALK_SHIFT;
    public static final long EPTP_MEMORY_TYPE_WB = 6;

    private Ept() {
    }

    /** An EPTP for a {@code levels}-level EPT rooted at {@code rootHpa}, write-back, A/D as given. */
    public static long eptp(long rootHpa, int levels, boolean accessedDirty) {
        if (levels != 4 && levels != 5) {
            throw new IllegalArgumentException("EPT levels " + levels + " must be 4 or 5");
        }
        return (rootHpa & ADDRESS_MASK) | ((long) (levels - 1) << EPTP_WALK_SHIFT)
            | (accessedDirty ? EPTP_AD : 0) | EPTP_MEMORY_TYPE_WB;
    }

    /** Number of EPT levels an EPTP selects (4 or 5), or 0 for an invalid walk length. */
    public static int levels(long eptp) {
        int levels = (int) ((eptp & EPTP_WALK_MASK) >>> EPTP_WALK_SHIFT) + 1;
        return levels == 4 || levels == 5 ? levels : 0;
    }

    /** An EPT entry pointing at {@code hpa} with permission and flag bits {@code flags}. */
    public static long entry(long hpa, long flags) {
        return (hpa & ADDRESS_MASK) | flags;
    }
}
