package io.vmpage.mmu;

/**
 * Event counters of one {@link Mmu}. Written only by the owning vCPU thread with plain stores; another
 * thread reading them sees values that may lag (no ordering is promised to readers off that thread).
 */
public final class MmuStats {
    /** Translations made without a TLB (the configuration switched it off). */
    long translationsWithoutTlb;
    long tlbHits;
    long tlbMisses;
    long walks;
    long walkRefs;
    long pscHits;
    long pscMisses;
    long nestedHits;
    long nestedMisses;
    long faults;
    /**
     * Warm walks (see {@code Walker.walkWarm}): one PDE-cache hit and one reference each, plus one
     * nested-cache hit for the nested ones. Counted once per walk, so the warm path does one counter
     * update where it would do four; the getters below fold them in.
     */
    long warmWalks;
    long warmNestedWalks;

    /** Translations requested: TLB hits and misses, or walks when there is no TLB. */
    public long translations() {
        return tlbHits + tlbMisses + translationsWithoutTlb;
    }

    public long tlbHits() {
        return tlbHits;
    }

    public long tlbMisses() {
        return tlbMisses;
    }

    /** Page walks performed (TLB misses and walks requested directly). */
    public long walks() {
        return walks + warmWalks + warmNestedWalks;
    }

    /** Paging-structure memory references made by all walks (guest and EPT). */
    public long walkRefs() {
        return walkRefs + warmWalks + warmNestedWalks;
    }

    public long pscHits() {
        return pscHits + warmWalks + warmNestedWalks;
    }

    public long pscMisses() {
        return pscMisses;
    }

    public long nestedHits() {
        return nestedHits + warmNestedWalks;
    }

    public long nestedMisses() {
        return nestedMisses;
    }

    public long faults() {
        return faults;
    }

    /** TLB hits / (hits + misses), 0 when nothing was translated. */
    public double tlbHitRate() {
        long total = tlbHits + tlbMisses;
        return total == 0 ? 0 : (double) tlbHits / total;
    }

    /** Average references per walk, 0 when there was none. */
    public double refsPerWalk() {
        long w = walks();
        return w == 0 ? 0 : (double) walkRefs() / w;
    }

    public void reset() {
        translationsWithoutTlb = tlbHits = tlbMisses = walks = walkRefs = pscHits = pscMisses = nestedHits = nestedMisses = faults = 0;
        warmWalks = warmNestedWalks = 0;
    }

    @Override
    public String toString() {
        return "translations=" + translations() + " tlbHits=" + tlbHits + " tlbMisses=" + tlbMisses + " walks=" + walks()
            + " walkRefs=" + walkRefs() + " pscHits=" + pscHits() + " pscMisses=" + pscMisses + " nestedHits=" + nestedHits()
            + " nestedMisses=" + nestedMisses + " faults=" + faults;
    }
}
