package io.vmpage.mmu;

/**
 * Geometry of one logical processor's translation hardware. Immutable; {@code with*} returns a copy.
 * Defaults follow a recent Intel core's second-level TLB (1536 4 KiB entries, 12-way) and small
 * paging-structure and nested caches; each cache can be switched off (size 0) so its benefit is
 * measurable.
 */
public final class MmuConfig {
    private final int tlbSets;
    private final int tlbWays;
    private final int largeTlbSets;
    private final int largeTlbWays;
    private final boolean tlbEnabled;
    private final int pscEntries;
    private final int nestedEntries;
    private final int maxPhysAddrBits;

    private MmuConfig(int tlbSets, int tlbWays, int largeTlbSets, int largeTlbWays, boolean tlbEnabled,
                      int pscEntries, int nestedEntries, int maxPhysAddrBits) {
        this.tlbSets = tlbSets;
        this.tlbWays = tlbWays;
        this.largeTlbSets = largeTlbSets;
        this.largeTlbWays = largeTlbWays;
        this.tlbEnabled = tlbEnabled;
        this.pscEntries = pscEntries;
        this.nestedEntries = nestedEntries;
        this.maxPhysAddrBits = maxPhysAddrBits;
    }

    /** 128 x 12 TLB for 4 KiB, 8 x 4 for each larger size, 32 entries per paging-structure cache level,
     *  64 nested entries, MAXPHYADDR 46. */
    public static MmuConfig defaults() {
        return new MmuConfig(128, 12, 8, 4, true, 32, 64, 46);
    }

    /** No TLB, no paging-structure cache, no nested cache: every translation is a cold walk. */
    public static MmuConfig uncached() {
        return defaults().withTlb(false).withPagingStructureCache(0).withNestedCache(0);
    }

    public MmuConfig withTlbGeometry(int sets, int ways, int largeSets, int largeWays) {
        return new MmuConfig(sets, ways, largeSets, largeWays, tlbEnabled, pscEntries, nestedEntries, maxPhysAddrBits);
    }

    public MmuConfig withTlb(boolean enabled) {
        return new MmuConfig(tlbSets, tlbWays, largeTlbSets, largeTlbWays, enabled, pscEntries, nestedEntries, maxPhysAddrBits);
    }

    /** Entries per level of the paging-structure caches (power of two), 0 to switch them off. */
    public MmuConfig withPagingStructureCache(int entriesPerLevel) {
        return new MmuConfig(tlbSets, tlbWays, largeTlbSets, largeTlbWays, tlbEnabled, entriesPerLevel, nestedEntries, maxPhysAddrBits);
    }

    /** Entries of the nested guest-physical cache (power of two), 0 to switch it off. */
    public MmuConfig withNestedCache(int entries) {
        return new MmuConfig(tlbSets, tlbWays, largeTlbSets, largeTlbWays, tlbEnabled, pscEntries, entries, maxPhysAddrBits);
    }

    public MmuConfig withMaxPhysAddrBits(int bits) {
        return new MmuConfig(tlbSets, tlbWays, largeTlbSets, largeTlbWays, tlbEnabled, pscEntries, nestedEntries, bits);
    }

    public int tlbSets() {
        return tlbSets;
    }

    public int tlbWays() {
        return tlbWays;
    }

    public int largeTlbSets() {
        return largeTlbSets;
    }

    public int largeTlbWays() {
        return largeTlbWays;
    }

    public boolean tlbEnabled() {
        return tlbEnabled;
    }

    public int pscEntries() {
        return pscEntries;
    }

    public int nestedEntries() {
        return nestedEntries;
    }

    public int maxPhysAddrBits() {
        return maxPhysAddrBits;
    }

    @Override
    public String toString() {
        return "MmuConfig[tlb=" + (tlbEnabled ? tlbSets + "x" + tlbWays + " + 2x" + largeTlbSets + "x" + largeTlbWays : "off")
            + ", psc=" + pscEntries + ", nested=" + nestedEntries + ", maxphyaddr=" + maxPhysAddrBits + "]";
    }

    /** Equal geometry (a value: a configuration read back from a migration stream equals the original). */
    @Override
    public boolean equals(Object o) {
        return o instanceof MmuConfig c && tlbSets == c.tlbSets && tlbWays == c.tlbWays && largeTlbSets == c.largeTlbSets
            && largeTlbWays == c.largeTlbWays && tlbEnabled == c.tlbEnabled && pscEntries == c.pscEntries
            && nestedEntries == c.nestedEntries && maxPhysAddrBits == c.maxPhysAddrBits;
    }

    @Override
    public int hashCode() {
        return java.util.Objects.hash(tlbSets, tlbWays, largeTlbSets, largeTlbWays, tlbEnabled, pscEntries, nestedEntries,
            maxPhysAddrBits);
    }
}
