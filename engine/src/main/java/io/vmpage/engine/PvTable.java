package io.vmpage.engine;

/**
 * One page-table page of a paravirtual VM as a migration carries it (Xen's {@code xc_domain_save}): its
 * guest frame, its level (1 = L1 .. 4 = L4), whether the guest pinned it, and its 512 entries
 * <em>canonicalized</em>: the machine frame number in each present entry replaced by the guest frame
 * number it backs, so the entries mean the same on a host whose machine frames are others. Non-present
 * entries travel as they are (the guest may keep its own bits there). The destination translates the
 * entries back to its own machine frames, and re-pins and re-validates the tables
 * ({@code xc_domain_restore}) before any vCPU loads a base pointer.
 *
 * @param gfn the guest frame holding the table
 * @param level 1 (L1) to 4 (L4)
 * @param pinned the guest pinned it (MMUEXT_PIN_Ln_TABLE)
 * @param entries the 512 canonical entries
 */
public record PvTable(long gfn, int level, boolean pinned, long[] entries) {
    /** Entries in a table page. */
    public static final int ENTRIES = 512;

    public PvTable {
        if (level < 1 || level > 4) {
            throw new IllegalArgumentException("a PV page table is level 1 to 4, not " + level);
        }
        if (entries == null || entries.length != ENTRIES) {
            throw new IllegalArgumentException("a PV page table has 512 entries");
        }
        entries = entries.clone();
    }

    /** A copy of the canonical entries. */
    @Override
    public long[] entries() {
        return entries.clone();
    }

    /** Canonical entry {@code i}. */
    public long entry(int i) {
        return entries[i];
    }
}
