package io.vmpage.mmu;

/**
 * Paging-structure caches (SDM 4.10.3): for each upper level, a direct-mapped cache from a linear-address
 * prefix to the next table, so a TLB miss need not re-read the upper levels. A PDE-cache hit leaves one
 * reference (the PTE); a PDPTE-cache hit two; a PML4E-cache hit three. Entries that map pages (PS=1) are
 * never cached here; they go to the TLB.
 *
 * <pre>
 *  one long[], the level-L cache (L = 2 PDE, 3 PDPTE, 4 PML4E, 5 PML5E) at slots [(L-2) * size, (L-1) * size),
 *  a slot is 4 consecutive longs, indexed by the low bits of its key:
 *   key      = (va >>> levelShift(L)) + 1          0 = empty
 *   tagFlags : 37..35 EPT R/W/X of the table's page | 34 U/S | 33 R/W | 32 NX | 27..0 VPID << 12 | PCID
 *              (R/W and U/S ANDed over levels L..top, NX ORed; the EPT rights decide whether A/D updates
 *              to the table may be written; RWX without EPT)
 *   tableGpa, tableHpa: the level-(L-1) table the entry points at (equal without EPT)
 * </pre>
 * Owned by one logical processor's thread, like the TLB.
 */
final class PagingStructureCache {
    /** Flags: NX in bit 0; R/W and U/S in the bits a paging entry keeps them in, so one AND combines them. */
    static final int F_NX = 1;
    static final int F_RW = (int) Pte.RW;
    static final int F_US = (int) Pte.US;
    static final int F_TABLE_PERMS_SHIFT = 3;

    private static final int STRIDE = 4;
    private static final int KEY = 0;
    private static final int TAG_FLAGS = 1;
    private static final int TABLE_GPA = 2;
    private static final int TABLE_HPA = 3;
    private static final long TAG_MASK = 0xFFFF_FFFFL;

    private final int mask;
    private final int size;
    private final long[] slots;

    /** @param entriesPerLevel a power of two */
    PagingStructureCache(int entriesPerLevel) {
        if (entriesPerLevel <= 0 || Integer.bitCount(entriesPerLevel) != 1 || entriesPerLevel > (1 << 20)) {
            throw new IllegalArgumentException("paging-structure cache entries " + entriesPerLevel
                + " must be a power of two up to 2^20");
        }
        this.size = entriesPerLevel;
        this.mask = entriesPerLevel - 1;
        this.slots = new long[entriesPerLevel * 4 * STRIDE];
    }

    private int slot(int level, long key) {
        return ((level - 2) * size + ((int) key & mask)) * STRIDE;
    }

    /** Slot holding the level-{@code level} entry for {@code va} under {@code tag}, or -1. */
    int find(int level, long va, int tag) {
        long key = (va >>> Pte.levelShift(level)) + 1;
        int s = slot(level, key);
        return slots[s + KEY] == key && (int) slots[s + TAG_FLAGS] == tag ? s : -1;
    }

    void put(int level, long va, int tag, long tableGpa, long tableHpa, int entryFlags) {
        long key = (va >>> Pte.levelShift(level)) + 1;
        int s = slot(level, key);
        slots[s + KEY] = key;
        slots[s + TAG_FLAGS] = (tag & TAG_MASK) | ((long) entryFlags << 32);
        slots[s + TABLE_GPA] = tableGpa;
        slots[s + TABLE_HPA] = tableHpa;
    }

    long tableGpa(int slot) {
        return slots[slot + TABLE_GPA];
    }

    long tableHpa(int slot) {
        return slots[slot + TABLE_HPA];
    }

    int flags(int slot) {
        return (int) (slots[slot + TAG_FLAGS] >>> 32);
    }

    /** Drops every entry tagged {@code tag} (VPID and PCID). */
    void invalidateTag(int tag) {
        for (int s = 0; s < slots.length; s += STRIDE) {
            if ((int) slots[s + TAG_FLAGS] == tag) {
                slots[s + KEY] = 0;
            }
        }
    }

    /** Drops every entry of {@code vpid}, all PCIDs. */
    void invalidateVpid(int vpid) {
        for (int s = 0; s < slots.length; s += STRIDE) {
            if ((int) slots[s + TAG_FLAGS] >>> 12 == vpid) {
                slots[s + KEY] = 0;
            }
        }
    }

    void clear() {
        for (int s = 0; s < slots.length; s += STRIDE) {
            slots[s + KEY] = 0;
        }
    }
}
