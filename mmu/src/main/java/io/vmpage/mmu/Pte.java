package io.vmpage.mmu;

/**
 * x86-64 paging-structure entry format (Intel SDM vol. 3A, 4.5), for 4-level and 5-level paging.
 *
 * <pre>
 *   63  62..52 51            M M-1                 12 11..9  8   7   6   5   4   3   2   1   0
 *  +---+------+----------------+----------------------+-----+---+---+---+---+---+---+---+---+---+
 *  |NX | avl  | reserved (0)   | physical address     | avl | G |PS | D | A |PCD|PWT|U/S|R/W| P |
 *  +---+------+----------------+----------------------+-----+---+---+---+---+---+---+---+---+---+
 *   M = MAXPHYADDR. PS is reserved (must be 0) in PML5E and PML4E; PS=1 in a PDPTE maps a 1 GiB page
 *   (address bits 29:12 reserved) and in a PDE a 2 MiB page (address bits 20:13 reserved; bit 12 is
 *   PAT there). D and G are meaningful only in entries that map a page. NX is reserved unless
 *   IA32_EFER.NXE = 1. Bits 62:52 and 11:9 are ignored (free for software).
 *
 *  Linear address, 4-level:                       5-level adds bits 56:48 (PML5 index) above.
 *   47       39 38       30 29       21 20       12 11          0
 *  +-----------+-----------+-----------+-----------+-------------+
 *  | PML4 idx  | PDPT idx  |  PD idx   |  PT idx   | page offset |
 *  +-----------+-----------+-----------+-----------+-------------+
 * </pre>
 */
public final class Pte {
    public static final long P = 1L;
    public static final long RW = 1L << 1;
    public static final long US = 1L << 2;
    public static final long PWT = 1L << 3;
    public static final long PCD = 1L << 4;
    public static final long A = 1L << 5;
    public static final long D = 1L << 6;
    public static final long PS = 1L << 7;
    public static final long G = 1L << 8;
    public static final long NX = 1L << 63;

    /** Bits 51:12: the address field at its widest (MAXPHYADDR = 52). */
    public static final long ADDRESS_MASK = 0x000F_FFFF_FFFF_F000L;

    /** Levels: 1 = PT, 2 = PD, 3 = PDPT, 4 = PML4, 5 = PML5. */
    public static final int LEVEL_PT = 1;
    public static final int LEVEL_PD = 2;
    public static final int LEVEL_PDPT = 3;
    public static final int LEVEL_PML4 = 4;
    public static final int LEVEL_PML5 = 5;

    public static final int SHIFT_4K = 12;
    public static final int SHIFT_2M = 21;
    public static final int SHIFT_1G = 30;

    private Pte() {
    }

    /** Bit position of the lowest linear-address bit translated by an entry at {@code level}. */
    public static int levelShift(int level) {
        return SHIFT_4K + 9 * (level - 1);
    }

    /** Index of {@code va} into the table at {@code level}. */
    public static int index(long va, int level) {
        return (int) (va >>> levelShift(level)) & 511;
    }

    /**
     * Bits that must be clear in a present entry at {@code level} ({@code leaf}: it maps a page), else
     * #PF with RSVD: the address bits at or above MAXPHYADDR ({@code reservedAddressBits}), NX without
     * EFER.NXE, PS in a PML4E/PML5E, and the low address bits of a 1 GiB (29:13) or 2 MiB (20:13) page
     * (bit 12 is PAT there).
     */
    public static long reservedBits(int level, boolean leaf, boolean nxe, long reservedAddressBits) {
        long bits = reservedAddressBits | (nxe ? 0 : NX);
        if (level >= LEVEL_PML4) {
            bits |= PS;
        } else if (leaf && level == LEVEL_PDPT) {
            bits |= 0x3FFF_E000L;
        } else if (leaf && level == LEVEL_PD) {
            bits |= 0x1F_E000L;
        }
        return bits;
    }

    /** An entry pointing at a next-level table or page at physical address {@code pa} with {@code flags}. */
    public static long entry(long pa, long flags) {
        return (pa & ADDRESS_MASK) | flags;
    }
}
