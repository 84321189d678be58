package io.vmpage.mmu;

import java.util.Arrays;

/**
 * A set-associative TLB with separate arrays for 4 KiB, 2 MiB and 1 GiB translations (as Intel cores
 * keep them), entries tagged with VPID and PCID. Entries carry the accesses they may serve: a write
 * to an entry whose page is not yet dirty (D clear in the guest entry, or in the EPT leaf with EPT A/D)
 * is not served, so the walk that sets D still happens.
 *
 * <pre>
 *  one way of one set, in three parallel arrays per page size:
 *   vpn   : (va >>> pageShift) + 1, 0 = empty
 *   tag   : 31  30..29         28      27..12  11..0
 *          +---+--------------+-------+-------+------+
 *          | 0 | guest size   | G     | VPID  | PCID |   guest size: 0 4K, 1 2M, 2 1G (the guest page
 *          +---+--------------+-------+-------+------+   this entry was cut from, for INVLPG)
 *   value : host-physical page base (bits 63..12) | bits 7..0 allowed-access mask, indexed by
 *           bit 0 write, bit 1 user, bit 2 fetch ({@code Access.index})
 * </pre>
 * A global entry (G: the leaf's G bit with CR4.PGE) matches every PCID of its VPID and survives CR3
 * loads. Replacement is round-robin per set after empty ways.
 *
 * <p>Owned by one logical processor's thread: lookups and fills take no lock and allocate nothing.
 * Another thread that wants entries gone asks the owner to invalidate them (a shootdown), as an IPI does.
 */
public final class Tlb {
    static final int GLOBAL = 1 << 28;
    static final int GUEST_SIZE_SHIFT = 29;
    private static final int VPID_PCID_MASK = (1 << 28) - 1;
    private static final int[] SHIFTS = {Pte.SHIFT_4K, Pte.SHIFT_2M, Pte.SHIFT_1G};

    /** The 4 KiB arrays again, in final fields: the hit path probes them first without indirection. */
    private final long[] vpn4k;
    private final int[] tag4k;
    private final long[] value4k;
    private final int setMask4k;
    private final int ways4k;
    private final long[][] vpns = new long[3][];
    private final int[][] tags = new int[3][];
    private final long[][] values = new long[3][];
    private final byte[][] victims = new byte[3][];
    private final int[] setMasks = new int[3];
    private final int[] ways = new int[3];
    /** Entries smaller than the guest page they came from exist (nested paging splinters large pages). */
    private boolean splintered;

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
        this.vpn4k = vpns[0];
        this.tag4k = tags[0];
        this.value4k = values[0];
        this.setMask4k = setMasks[0];
        this.ways4k = ways[0];
    }

    private void init(int size, int sets, int assoc) {
        if (sets <= 0 || Integer.bitCount(sets) != 1 || assoc <= 0 || assoc > 64) {
            throw new IllegalArgumentException("TLB geometry " + sets + " sets x " + assoc
                + " ways: sets must be a power of two and ways between 1 and 64");
        }
        int n = sets * assoc;
        vpns[size] = new long[n];
        tags[size] = new int[n];
        values[size] = new long[n];
        victims[size] = new byte[sets];
        setMasks[size] = sets - 1;
        ways[size] = assoc;
    }

    /** Total number of entries. */
    public int capacity() {
        return vpns[0].length + vpns[1].length + vpns[2].length;
    }

    /** Number of valid entries (for tests and reports; scans the arrays). */
    public int occupancy() {
        int n = 0;
        for (long[] v : vpns) {
            for (long x : v) {
                n += x != 0 ? 1 : 0;
            }
        }
        return n;
    }

    /**
     * The host-physical address for {@code va}, or -1 when no entry under {@code tag} (VPID << 12 | PCID)
     * may serve {@code access}.
     */
    public long lookup(long va, int access, int tag) {
        int bit = 1 << Access.index(access);
        long vpn = (va >>> Pte.SHIFT_4K) + 1;
        int base = ((int) vpn & setMask4k) * ways4k;
        for (int i = base, end = base + ways4k; i < end; i++) {
            if (vpn4k[i] == vpn && matches(tag4k[i], tag)) {
                long v = value4k[i];
                return (v & bit) == 0 ? -1 : (v & ~MachineMemory.FRAME_OFFSET_MASK) + (va & MachineMemory.FRAME_OFFSET_MASK);
            }
        }
        return lookupLarge(va, bit, tag);
    }

    private long lookupLarge(long va, int bit, int tag) {
        for (int size = 1; size < 3; size++) {
            int shift = SHIFTS[size];
            long vpn = (va >>> shift) + 1;
            int i = find(size, vpn, tag);
            if (i >= 0) {
                long v = values[size][i];
                if ((v & bit) == 0) {
                    return -1; // present but not for this access (permission, or clean page on a write)
                }
                return (v & ~MachineMemory.FRAME_OFFSET_MASK) + (va & ((1L << shift) - 1));
            }
        }
        return -1;
    }

    private int find(int size, long vpn, int tag) {
        long[] vp = vpns[size];
        int[] tg = tags[size];
        int w = ways[size];
        int base = ((int) vpn & setMasks[size]) * w;
        for (int i = base, end = base + w; i < end; i++) {
            if (vp[i] == vpn && matches(tg[i], tag)) {
                return i;
            }
        }
        return -1;
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
        long vpn = (va >>> pageShift) + 1;
        int guestSize = (guestShift - Pte.SHIFT_4K) / 9;
        int entryTag = (tag & VPID_PCID_MASK) | (global ? GLOBAL : 0) | (guestSize << GUEST_SIZE_SHIFT);
        if (guestSize > size) {
            splintered = true;
        }
        long[] vp = vpns[size];
        int w = ways[size];
        int set = (int) vpn & setMasks[size];
        int base = set * w;
        int slot = -1;
        for (int i = base, end = base + w; i < end; i++) {
            if (vp[i] == vpn && (tags[size][i] & VPID_PCID_MASK) == (tag & VPID_PCID_MASK)) {
                slot = i; // refresh the existing entry (e.g. after a walk set D)
                break;
            }
            if (slot < 0 && vp[i] == 0) {
                slot = i;
            }
        }
        if (slot < 0) {
            int victim = victims[size][set] & 0xFF;
            victims[size][set] = (byte) ((victim + 1) % w);
            slot = base + victim;
        }
        vp[slot] = vpn;
        tags[size][slot] = entryTag;
        values[size][slot] = (hpa & ~((1L << pageShift) - 1)) | (allowed & 0xFF);
    }

    /**
     * INVLPG / INVPCID type 0: removes the entries of every size that translate {@code va} under
     * {@code vpid}/{@code pcid}, and, when {@code includeGlobal}, global entries of that VPID too.
     * Entries cut from a larger guest page containing {@code va} go as well.
     */
    public void invalidatePage(long va, int vpid, int pcid, boolean includeGlobal) {
        int tag = vpid << 12 | pcid;
        for (int size = 0; size < 3; size++) {
            long vpn = (va >>> SHIFTS[size]) + 1;
            long[] vp = vpns[size];
            int[] tg = tags[size];
            int w = ways[size];
            int base = ((int) vpn & setMasks[size]) * w;
            for (int i = base, end = base + w; i < end; i++) {
                if (vp[i] == vpn && hits(tg[i], tag, includeGlobal)) {
                    vp[i] = 0;
                }
            }
        }
        if (splintered) {
            for (int size = 0; size < 2; size++) {
                long[] vp = vpns[size];
                int[] tg = tags[size];
                int shift = SHIFTS[size];
                for (int i = 0; i < vp.length; i++) {
                    int guestSize = tg[i] >>> GUEST_SIZE_SHIFT & 3;
                    if (vp[i] != 0 && guestSize > size && hits(tg[i], tag, includeGlobal)) {
                        int guestShift = SHIFTS[guestSize];
                        if (((vp[i] - 1) << shift) >>> guestShift == va >>> guestShift) {
                            vp[i] = 0;
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
        for (long[] v : vpns) {
            Arrays.fill(v, 0);
        }
        splintered = false;
    }

    private void removeIf(int want, int mask) {
        for (int size = 0; size < 3; size++) {
            long[] vp = vpns[size];
            int[] tg = tags[size];
            for (int i = 0; i < vp.length; i++) {
                if ((tg[i] & mask) == want) {
                    vp[i] = 0;
                }
            }
        }
    }
}
