package io.vmpage.mmu;

/**
 * Guest-physical to host-physical cache for the 2D walk (Intel's cached guest-physical mappings, AMD's
 * nested TLB): 4-way set-associative by 4 KiB guest frame, tagged with the EPTP. It serves both the guest
 * paging-structure references of a 2D walk and the final guest-physical address, so a warm 2D walk does
 * not re-walk the EPT. Invalidated by INVEPT.
 *
 * <pre>
 *  one long[] of WAYS banks, bank w holding way w of every set (way-major: the way-0 entries of
 *  consecutive sets are adjacent, so a contiguous guest range warms few cache lines); the entry of set s
 *  (the low bits of the key) in way w is 3 longs at ((w * sets) + s) * 3:
 *   key   = gfn + 1 (0 empty)
 *   eptp  = the EPTP it was walked under
 *   value : 63..12 host-physical address of the 4 KiB chunk | 5..4 EPT leaf size (0 4K, 1 2M, 2 1G)
 *           | 3 EPT D set | 2 X | 1 W | 0 R   (R/W/X ANDed over the EPT levels)
 * </pre>
 * Consecutive guest frames fill consecutive sets, as guest RAM is mostly contiguous. Owned by one logical
 * processor's thread.
 */
final class NestedCache {
    static final long V_DIRTY = 1L << 3;
    static final int V_SIZE_SHIFT = 4;

    static final int WAYS = 4;
    private static final int STRIDE = 3;
    private static final int KEY = 0;
    private static final int EPTP = 1;
    private static final int VALUE = 2;

    private final long[] ways;
    private final byte[] victims;
    private final int setMask;
    /** Longs per bank: sets * STRIDE. */
    private final int bankLongs;

    /** @param entries a power of two, at least {@link #WAYS} */
    NestedCache(int entries) {
        if (entries < WAYS || Integer.bitCount(entries) != 1 || entries > (1 << 24)) {
            throw new IllegalArgumentException("nested cache entries " + entries + " must be a power of two from "
                + WAYS + " to 2^24");
        }
        ways = new long[entries * STRIDE];
        victims = new byte[entries / WAYS];
        setMask = entries / WAYS - 1;
        bankLongs = entries / WAYS * STRIDE;
    }

    /** Index of the set's way-0 entry; way w is {@code w * bankLongs} further. */
    private int setBase(long key) {
        return ((int) key & setMask) * STRIDE;
    }

    /** The cached value for {@code gpa} under {@code eptp}, or -1. */
    long find(long eptp, long gpa) {
        long key = (gpa >>> Pte.SHIFT_4K) + 1;
        long[] w = ways;
        int i = setBase(key);
        for (int way = 0; way < WAYS; way++, i += bankLongs) { // a constant trip count: unrolled
            if (w[i + KEY] == key && w[i + EPTP] == eptp) {
                return w[i + VALUE];
            }
        }
        return -1;
    }

    void put(long eptp, long gpa, long value) {
        long key = (gpa >>> Pte.SHIFT_4K) + 1;
        int base = setBase(key);
        int slot = -1;
        for (int way = 0, i = base; way < WAYS; way++, i += bankLongs) {
            if (ways[i + KEY] == key && ways[i + EPTP] == eptp) {
                slot = i;
                break;
            }
            if (slot < 0 && ways[i + KEY] == 0) {
                slot = i;
            }
        }
        if (slot < 0) {
            int set = (int) key & setMask;
            slot = base + victims[set] * bankLongs;
            victims[set] = (byte) ((victims[set] + 1) % WAYS);
        }
        ways[slot + KEY] = key;
        ways[slot + EPTP] = eptp;
        ways[slot + VALUE] = value;
    }

    /** INVEPT single-context: drops the entries walked under {@code eptp}. */
    void invalidate(long eptp) {
        for (int i = 0; i < ways.length; i += STRIDE) {
            if (ways[i + EPTP] == eptp) {
                ways[i + KEY] = 0;
            }
        }
    }

    void clear() {
        for (int i = 0; i < ways.length; i += STRIDE) {
            ways[i + KEY] = 0;
        }
    }
}
