package io.vmpage.mmu;

/**
 * Guest-physical to host-physical cache for the 2D walk (Intel's cached guest-physical mappings, AMD's
 * nested TLB): 4-way set-associative by 4 KiB guest frame, tagged with the EPTP. It serves both the guest
 * paging-structure references of a 2D walk and the final guest-physical address, so a warm 2D walk does
 * not re-walk the EPT. Invalidated by INVEPT.
 *
 * <pre>
 *  slot: key = gfn + 1 (0 empty) | eptp = the EPTP it was walked under
 *        value:  63..12 host-physical address of the 4 KiB chunk | 5..4 EPT leaf size (0 4K, 1 2M, 2 1G)
 *                | 3 EPT D set | 2 X | 1 W | 0 R   (R/W/X ANDed over the EPT levels)
 * </pre>
 * Owned by one logical processor's thread.
 */
final class NestedCache {
    static final long V_DIRTY = 1L << 3;
    static final int V_SIZE_SHIFT = 4;

    static final int WAYS = 4;

    private final long[] keys;
    private final long[] eptps;
    private final long[] values;
    private final byte[] victims;
    private final int setMask;

    /** @param entries a power of two, at least {@link #WAYS} */
    NestedCache(int entries) {
        if (entries < WAYS || Integer.bitCount(entries) != 1) {
            throw new IllegalArgumentException("nested cache entries " + entries + " must be a power of two >= " + WAYS);
        }
        keys = new long[entries];
        eptps = new long[entries];
        values = new long[entries];
        victims = new byte[entries / WAYS];
        setMask = entries / WAYS - 1;
    }

    private int setBase(long gfn) {
        return (int) ((gfn * 0x9E3779B97F4A7C15L) >>> 40) & setMask;
    }

    /** The cached value for {@code gpa} under {@code eptp}, or -1. */
    long find(long eptp, long gpa) {
        long key = (gpa >>> Pte.SHIFT_4K) + 1;
        int base = setBase(key) * WAYS;
        for (int i = base; i < base + WAYS; i++) {
            if (keys[i] == key && eptps[i] == eptp) {
                return values[i];
            }
        }
        return -1;
    }

    void put(long eptp, long gpa, long value) {
        long key = (gpa >>> Pte.SHIFT_4K) + 1;
        int set = setBase(key);
        int base = set * WAYS;
        int slot = -1;
        for (int i = base; i < base + WAYS; i++) {
            if (keys[i] == key && eptps[i] == eptp) {
                slot = i;
                break;
            }
            if (slot < 0 && keys[i] == 0) {
                slot = i;
            }
        }
        if (slot < 0) {
            slot = base + victims[set];
            victims[set] = (byte) ((victims[set] + 1) % WAYS);
        }
        keys[slot] = key;
        eptps[slot] = eptp;
        values[slot] = value;
    }

    /** INVEPT single-context: drops the entries walked under {@code eptp}. */
    void invalidate(long eptp) {
        for (int i = 0; i < keys.length; i++) {
            if (eptps[i] == eptp) {
                keys[i] = 0;
            }
        }
    }

    void clear() {
        java.util.Arrays.fill(keys, 0);
    }
}
