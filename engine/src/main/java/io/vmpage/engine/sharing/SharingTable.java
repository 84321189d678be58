package io.vmpage.engine.sharing;

/**
 * ESX's one host-wide table of page hashes: a fixed open-addressing table of (key, entry) pairs, where
 * the key is a page's 64-bit content hash salted with its sharing domain, and the entry says where a page
 * with that content is. Bounded: its size is fixed when the host starts sharing, at most a quarter of a
 * percent of machine memory (ESX: under 0.5%), so it never grows with the guests.
 *
 * <p>Entry layout (one long; 0 = an empty slot, which a real entry never is since VM ids start at 1):
 * <pre>
 *  63  62 61      56 55            40 39                          0
 * +---+--+----------+----------------+-----------------------------+
 * | 0 |S |    0     |  VM id (16)    |      guest frame (40)       |
 * +---+--+----------+----------------+-----------------------------+
 *   S = 0: a hint (this guest frame was hashed once, nothing shares it yet)
 *   S = 1: a shared frame, reached through this sharer (its guest frame maps the shared machine frame)
 * </pre>
 * A shared entry names a sharer rather than the machine frame itself: the scanner checks that the sharer
 * is alive, in the right domain and still mapping a shared frame before it joins it, so a frame freed and
 * reused elsewhere (perhaps by another domain with the same contents) can never be joined by mistake.
 *
 * <p>Probing is linear over a window of {@link #WINDOW} slots from the key's home slot. When a window is
 * full, a new entry takes the place of a hint in it (hints are only advice); a window of shared entries
 * only turns a new page away. Not thread-safe: the scanner's lock guards it.
 */
final class SharingTable {
    static final long EMPTY = 0;
    private static final long SHARED = 1L << 62;
    private static final int VM_SHIFT = 40;
    private static final long GFN_MASK = (1L << VM_SHIFT) - 1;
    private static final int WINDOW = 8;
    /** Bytes per slot: the key and the entry. */
    static final int SLOT_BYTES = 16;

    private final long[] keys;
    private final long[] entries;
    private final int mask;
    private long hints;
    private long evicted;

    /** A table of the largest power of two of slots that fits {@code budgetBytes} (at least 64 slots). */
    SharingTable(long budgetBytes) {
        long slots = Long.highestOneBit(Math.max(64, budgetBytes / SLOT_BYTES));
        if (slots > 1 << 30) {
            slots = 1 << 30;
        }
        keys = new long[(int) slots];
        entries = new long[(int) slots];
        mask = (int) slots - 1;
    }

    static long hint(int vmId, long gfn) {
        return ((long) vmId << VM_SHIFT) | gfn;
    }

    static long shared(int vmId, long gfn) {
        return SHARED | hint(vmId, gfn);
    }

    static boolean isShared(long entry) {
        return (entry & SHARED) != 0;
    }

    static int vmId(long entry) {
        return (int) ((entry >>> VM_SHIFT) & 0xFFFF);
    }

    static long gfn(long entry) {
        return entry & GFN_MASK;
    }

    /** The entry under {@code key}, or {@link #EMPTY}. */
    long get(long key) {
        int home = home(key);
        for (int i = 0; i < WINDOW; i++) {
            int slot = (home + i) & mask;
            if (entries[slot] != EMPTY && keys[slot] == key) {
                return entries[slot];
            }
        }
        return EMPTY;
    }

    /** Sets the entry under {@code key}; false when its window holds only other keys' shared entries. */
    boolean put(long key, long entry) {
        int home = home(key);
        int free = -1;
        int hint = -1;
        for (int i = 0; i < WINDOW; i++) {
            int slot = (home + i) & mask;
            long e = entries[slot];
            if (e != EMPTY && keys[slot] == key) {
                set(slot, key, entry);
                return true;
            }
            if (e == EMPTY && free < 0) {
                free = slot;
            } else if (e != EMPTY && !isShared(e) && hint < 0) {
                hint = slot;
            }
        }
        if (free < 0 && hint < 0) {
            return false;
        }
        if (free < 0) {
            evicted++;
        }
        set(free >= 0 ? free : hint, key, entry);
        return true;
    }

    private void set(int slot, long key, long entry) {
        long old = entries[slot];
        if (old != EMPTY && !isShared(old)) {
            hints--;
        }
        if (!isShared(entry)) {
            hints++;
        }
        keys[slot] = key;
        entries[slot] = entry;
    }

    /** Hint entries in the table now. */
    long hints() {
        return hints;
    }

    /** Hints evicted to make room so far. */
    long evicted() {
        return evicted;
    }

    long bytes() {
        return (long) keys.length * SLOT_BYTES;
    }

    private int home(long key) {
        long h = key * 0x9E3779B97F4A7C15L; // the key is a hash already; this spreads salted and zero keys alike
        return (int) (h >>> 32) & mask;
    }
}
