package io.vmpage.mmu;

/**
 * Paging-structure caches (SDM 4.10.3): for each upper level, a direct-mapped cache from a linear-address
 * prefix to the next table, so a TLB miss need not re-read the upper levels. A PDE-cache hit leaves one
 * reference (the PTE); a PDPTE-cache hit two; a PML4E-cache hit three. Entries that map pages (PS=1) are
 * never cached here; they go to the TLB.
 *
 * <pre>
 *  slot of the level-L cache (L = 2 PDE, 3 PDPTE, 4 PML4E, 5 PML5E), parallel arrays:
 *   key    = (va >>> levelShift(L)) + 1          0 = empty
 *   tag    = VPID << 12 | PCID
 *   tableGpa, tableHpa: the level-(L-1) table the entry points at (equal without EPT)
 *   flags  = bit 0 R/W, bit 1 U/S (ANDed over levels L..top), bit 2 NX (ORed),
 *            bits 5:3 the EPT R/W/X of the table's page (A/D updates to it need W; RWX without EPT)
 * </pre>
 * Owned by one logical processor's thread, like the TLB.
 */
final class PagingStructureCache {
    static final int F_RW = 1;
    static final int F_US = 2;
    static final int F_NX = 4;
    static final int F_TABLE_PERMS_SHIFT = 3;

    private final int mask;
    /** Indexed [(level - 2) * size + slot]. */
    private final long[] keys;
    private final int[] tags;
    private final long[] tableGpas;
    private final long[] tableHpas;
    private final int[] flags;
    private final int size;

    /** @param entriesPerLevel a power of two */
    PagingStructureCache(int entriesPerLevel) {
        if (entriesPerLevel <= 0 || Integer.bitCount(entriesPerLevel) != 1) {
            throw new IllegalArgumentException("paging-structure cache entries " + entriesPerLevel
                + " must be a positive power of two");
        }
        this.size = entriesPerLevel;
        this.mask = entriesPerLevel - 1;
        int total = entriesPerLevel * 4;
        keys = new long[total];
        tags = new int[total];
        tableGpas = new long[total];
        tableHpas = new long[total];
        flags = new int[total];
    }

    private int slot(int level, long key) {
        long h = key * 0x9E3779B97F4A7C15L;
        return (level - 2) * size + ((int) (h >>> 40) & mask);
    }

    /** Slot holding the level-{@code level} entry for {@code va} under {@code tag}, or -1. */
    int find(int level, long va, int tag) {
        long key = (va >>> Pte.levelShift(level)) + 1;
        int s = slot(level, key);
        return keys[s] == key && tags[s] == tag ? s : -1;
    }

    void put(int level, long va, int tag, long tableGpa, long tableHpa, int entryFlags) {
        long key = (va >>> Pte.levelShift(level)) + 1;
        int s = slot(level, key);
        keys[s] = key;
        tags[s] = tag;
        tableGpas[s] = tableGpa;
        tableHpas[s] = tableHpa;
        flags[s] = entryFlags;
    }

    long tableGpa(int slot) {
        return tableGpas[slot];
    }

    long tableHpa(int slot) {
        return tableHpas[slot];
    }

    int flags(int slot) {
        return flags[slot];
    }

    /** Drops every entry tagged {@code tag} (VPID and PCID). */
    void invalidateTag(int tag) {
        for (int i = 0; i < keys.length; i++) {
            if (tags[i] == tag) {
                keys[i] = 0;
            }
        }
    }

    /** Drops every entry of {@code vpid}, all PCIDs. */
    void invalidateVpid(int vpid) {
        for (int i = 0; i < keys.length; i++) {
            if (tags[i] >>> 12 == vpid) {
                keys[i] = 0;
            }
        }
    }

    void clear() {
        java.util.Arrays.fill(keys, 0);
    }
}
