package io.vmpage.mmu;

import java.util.Arrays;
import org.agrona.UnsafeApi;

/**
 * A set-associative TLB with separate arrays for 4 KiB, 2 MiB and 1 GiB translations (as Intel cores
 * keep them), entries tagged with VPID and PCID. Entries carry the accesses they may serve: a write
 * to an entry whose page is not yet dirty (D clear in the guest entry, or in the EPT leaf with EPT A/D)
 * is not served, so the walk that sets D still happens.
 *
 * <pre>
 *  one page size: a long[] of `ways` banks, bank w holding way w of every set (way-major: the way-0
 *  entries of all sets are adjacent, and set s's way-0 entry sits at a constant multiple of s); the
 *  entry of set s (low bits of the key) in way w is 3 consecutive longs at (w * sets + s) * 3:
 *   key   : (va >>> pageShift) + 1, 0 = empty
 *   tag   : 28  27..12  11..0
 *          +---+-------+------+
 *          | G | VPID  | PCID |
 *          +---+-------+------+
 *   value : 63..12 host-physical page base | 9..8 guest size | 7..0 allowed-access mask
 *           guest size: 0 4K, 1 2M, 2 1G (the guest page this entry was cut from, for INVLPG);
 *           allowed mask indexed by bit 0 write, bit 1 user, bit 2 fetch ({@code Access.index})
 * </pre>
 * A global entry (G: the leaf's G bit with CR4.PGE) matches every PCID of its VPID and survives CR3
 * loads. Replacement is round-robin per set after empty ways.
 *
 * <p>The hit path probes way 0 of the 4 KiB set first, reading the entry with unchecked loads: the
 * offset is a masked set number times the entry size, inside the array by construction. A miss there
 * (another way, another page size, a global entry under another PCID) takes the general lookup. Hits
 * are counted here, in the object the hit path already holds.
 *
 * <p>Owned by one logical processor's thread: lookups and fills take no lock and allocate nothing.
 * Another thread that wants entries gone asks the owner to invalidate them (a shootdown), as an IPI does.
 */
public final class Tlb {
    static final int GLOBAL = 1 << 28;
    private static final int VPID_PCID_MASK = (1 << 28) - 1;
    private static final int GUEST_SIZE_SHIFT = 8;
    private static final int ALLOWED_MASK = 0xFF;
    private static final int[] SHIFTS = {Pte.SHIFT_4K, Pte.SHIFT_2M, Pte.SHIFT_1G};
    /** Longs per entry, and the offsets of an entry's fields. */
    private static final int STRIDE = 3;
    private static final int KEY = 0;
    private static final int TAG = 1;
    private static final int VALUE = 2;
    private static final long ARRAY_BASE = UnsafeApi.arrayBaseOffset(long[].class);
    private static final int ENTRY_BYTES = STRIDE * Long.BYTES;
    /** Bits 51:12 of an entry value: the page base (below MAXPHYADDR's 52-bit limit, so never negative). */
    private static final long PAGE_BASE_MASK = Pte.ADDRESS_MASK;

    /** The 4 KiB array and its set mask again, in final fields: the hit path reads them without indirection. */
    private final long[] entries4k;
    private final int setMask4k;
    private final long[][] entries = new long[3][];
    private final byte[][] victims = new byte[3][];
    private final int[] setMasks = new int[3];
    private final int[] ways = new int[3];
    /** Entries smaller than the guest page they came from exist (nested paging splinters large pages). */
    private boolean splintered;
    /** Lookups served; plain counter, written only by the owning thread (read through {@link MmuStats}). */
    long hits;

    /**
     * @param sets4k sets for 4 KiB entries (power of two)
     * @param ways4k ways for 4 KiB entries
     * @param setsLarge sets for each of the 2 MiB and 1 GiB arrays (power of two)
     * @param waysLarge ways for each of the 2 MiB and 1 GiB arrays
     */
    public Tlb(int sets4k, int ways4k, int setsLarge, int waysLarge) {
        init(0, sets4k, ways4k);
        init(1, setsLarge, waysLarge);
        init(2, setsLarge, waysLarge);
        this.entries4k = entries[0];
        this.setMask4k = setMasks[0];
    }

    private void init(int size, int sets, int assoc) {
        if (sets <= 0 || Integer.bitCount(sets) != 1 || sets > (1 << 16) || assoc <= 0 || assoc > 64) {
            throw new IllegalArgumentException("TLB geometry " + sets + " sets x " + assoc
                + " ways: sets must be a power of two up to 65536 and ways between 1 and 64");
        }
        entries[size] = new long[sets * assoc * STRIDE];
        victims[size] = new byte[sets];
        setMasks[size] = sets - 1;
        ways[size] = assoc;
    }

    /** Total number of entries. */
    public int capacity() {
        return (entries[0].length + entries[1].length + entries[2].length) / STRIDE;
    }

    /** Number of valid entries (for tests and reports; scans the arrays). */
    public int occupancy() {
        int n = 0;
        for (long[] e : entries) {
            for (int i = KEY; i < e.length; i += STRIDE) {
                n += e[i] != 0 ? 1 : 0;
            }
        }
        return n;
    }

    /**
     * The host-physical address for {@code va}, or -1 when no entry under {@code tag} (VPID << 12 | PCID)
     * may serve {@code access}.
     */
    public long lookup(long va, int access, int tag) {
        long key = (va >>> Pte.SHIFT_4K) + 1;
        long offset = ARRAY_BASE + (long) ((int) key & setMask4k) * ENTRY_BYTES;
        long[] e = entries4k;
        if (UnsafeApi.getLong(e, offset) == key && UnsafeApi.getLong(e, offset + TAG * Long.BYTES) == tag) {
            long v = UnsafeApi.getLong(e, offset + VALUE * Long.BYTES);
            if ((v & (1L << Access.index(access))) == 0) {
                return -1;
            }
            hits++;
            return (v & PAGE_BASE_MASK) + (va & MachineMemory.FRAME_OFFSET_MASK); // provably >= 0
        }
        long hpa = lookupAnyWay(va, 1 << Access.index(access), tag);
        if (hpa >= 0) {
            hits++;
        }
        return hpa;
    }

    /** The general lookup: every way of every page size, global entries included. */
    private long lookupAnyWay(long va, int bit, int tag) {
        for (int size = 0; size < 3; size++) {
            int shift = SHIFTS[size];
            int i = find(size, (va >>> shift) + 1, tag);
            if (i >= 0) {
                long v = entries[size][i + VALUE];
                if ((v & bit) == 0) {
                    return -1; // present but not for this access (permission, or clean page on a write)
                }
                return (v & ~MachineMemory.FRAME_OFFSET_MASK) + (va & ((1L << shift) - 1));
            }
        }
        return -1;
    }

    /** Index of the entry for {@code key} matching {@code tag} (exactly, or a global entry of its VPID), or -1. */
    private int find(int size, long key, int tag) {
        long[] e = entries[size];
        int base = setBase(size, key);
        for (int way = 0, i = base, bank = bankLongs(size); way < ways[size]; way++, i += bank) {
            if (e[i + KEY] == key && matches((int) e[i + TAG], tag)) {
                return i;
            }
        }
        return -1;
    }

    /** Index of the way-0 entry of {@code key}'s set; way w is {@link #bankLongs} further per way. */
    private int setBase(int size, long key) {
        return ((int) key & setMasks[size]) * STRIDE;
    }

    private int bankLongs(int size) {
        return (setMasks[size] + 1) * STRIDE;
    }

    private static boolean matches(int entryTag, int tag) {
        int t = entryTag & VPID_PCID_MASK;
        return t == tag || ((entryTag & GLOBAL) != 0 && (t >>> 12) == (tag >>> 12));
    }

    /**
     * Caches a translation of the page of size {@code 1 << pageShift} containing {@code va}.
     *
     * @param hpa host-physical address {@code va} translates to
     * @param allowed mask of accesses the entry may serve (see class doc)
     * @param global the leaf's G bit, with CR4.PGE
     * @param guestShift log2 size of the guest page the translation was cut from (>= pageShift)
     */
    public void insert(long va, int tag, long hpa, int pageShift, int allowed, boolean global, int guestShift) {
        int size = (pageShift - Pte.SHIFT_4K) / 9;
        long key = (va >>> pageShift) + 1;
        int guestSize = (guestShift - Pte.SHIFT_4K) / 9;
        int t = tag & VPID_PCID_MASK;
        if (guestSize > size) {
            splintered = true;
        }
        long[] e = entries[size];
        int base = setBase(size, key);
        int slot = -1;
        for (int way = 0, i = base, bank = bankLongs(size); way < ways[size]; way++, i += bank) {
            if (e[i + KEY] == key && ((int) e[i + TAG] & VPID_PCID_MASK) == t) {
                slot = i; // refresh the existing entry (e.g. after a walk set D)
                break;
            }
            if (slot < 0 && e[i + KEY] == 0) {
                slot = i;
            }
        }
        if (slot < 0) {
            int set = (int) key & setMasks[size];
            int victim = victims[size][set] & 0xFF;
            victims[size][set] = (byte) ((victim + 1) % ways[size]);
            slot = base + victim * bankLongs(size);
        }
        e[slot + KEY] = key;
        e[slot + TAG] = t | (global ? GLOBAL : 0);
        e[slot + VALUE] = (hpa & ~((1L << pageShift) - 1)) | ((long) guestSize << GUEST_SIZE_SHIFT) | (allowed & ALLOWED_MASK);
    }

    /**
     * INVLPG / INVPCID type 0: removes the entries of every size that translate {@code va} under
     * {@code vpid}/{@code pcid}, and, when {@code includeGlobal}, global entries of that VPID too.
     * Entries cut from a larger guest page containing {@code va} go as well.
     */
    public void invalidatePage(long va, int vpid, int pcid, boolean includeGlobal) {
        int tag = vpid << 12 | pcid;
        for (int size = 0; size < 3; size++) {
            long key = (va >>> SHIFTS[size]) + 1;
            long[] e = entries[size];
            int base = setBase(size, key);
            for (int way = 0, i = base, bank = bankLongs(size); way < ways[size]; way++, i += bank) {
                if (e[i + KEY] == key && hits((int) e[i + TAG], tag, includeGlobal)) {
                    e[i + KEY] = 0;
                }
            }
        }
        if (splintered) {
            for (int size = 0; size < 2; size++) {
                long[] e = entries[size];
                int shift = SHIFTS[size];
                for (int i = 0; i < e.length; i += STRIDE) {
                    int guestSize = (int) (e[i + VALUE] >>> GUEST_SIZE_SHIFT) & 3;
                    if (e[i + KEY] != 0 && guestSize > size && hits((int) e[i + TAG], tag, includeGlobal)) {
                        int guestShift = SHIFTS[guestSize];
                        if (((e[i + KEY] - 1) << shift) >>> guestShift == va >>> guestShift) {
                            e[i + KEY] = 0;
                        }
                    }
                }
            }
        }
    }

    private static boolean hits(int entryTag, int tag, boolean includeGlobal) {
        int t = entryTag & VPID_PCID_MASK;
        if ((entryTag & GLOBAL) != 0) {
            return includeGlobal && (t >>> 12) == (tag >>> 12);
        }
        return t == tag;
    }

    /** Removes the non-global entries of {@code vpid}/{@code pcid} (CR3 load, INVPCID type 1). */
    public void invalidatePcid(int vpid, int pcid) {
        int tag = vpid << 12 | pcid;
        removeIf(tag, VPID_PCID_MASK | GLOBAL);
    }

    /** Removes every non-global entry of {@code vpid}, any PCID (INVPCID type 3). */
    public void invalidateVpidNonGlobal(int vpid) {
        removeIf(vpid << 12, (0xFFFF << 12) | GLOBAL);
    }

    /** Removes every entry of {@code vpid}, global ones included (INVVPID, INVPCID type 2). */
    public void invalidateVpid(int vpid) {
        removeIf(vpid << 12, 0xFFFF << 12);
    }

    /** Removes everything. */
    public void flushAll() {
        for (long[] e : entries) {
            Arrays.fill(e, 0);
        }
        splintered = false;
    }

    private void removeIf(int want, int mask) {
        for (long[] e : entries) {
            for (int i = 0; i < e.length; i += STRIDE) {
                if (((int) e[i + TAG] & mask) == want) {
                    e[i + KEY] = 0;
                }
            }
        }
    }
}
