package io.vmpage.mmu;

import static io.vmpage.mmu.ControlRegisters.CR0_PG;
import static io.vmpage.mmu.ControlRegisters.CR0_WP;
import static io.vmpage.mmu.ControlRegisters.CR3_NO_FLUSH;
import static io.vmpage.mmu.ControlRegisters.CR4_PCIDE;
import static io.vmpage.mmu.ControlRegisters.CR4_PGE;
import static io.vmpage.mmu.ControlRegisters.EFER_NXE;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * TLB and paging-structure-cache semantics (SDM 4.10): tags, what each invalidation removes and keeps.
 * Stale entries are shown by changing the tables in memory without invalidating: the architecture lets
 * the TLB keep the old translation until software invalidates it.
 */
class TlbTest {
    private static final long VA = 0x0000_7F12_3456_7000L;
    private static final long OLD = 0x0010_0000L;
    private static final long NEW = 0x0020_0000L;

    private final Machine m = new Machine();
    private final Translation t = new Translation();

    @AfterEach
    void close() {
        m.close();
    }

    private long hpa(Mmu mmu, long va, int access) {
        long hpa = mmu.translate(va, access);
        assertTrue(hpa >= 0, () -> "fault: " + mmu.lastTranslation());
        return hpa;
    }

    @Test
    void hitsAfterTheFirstWalkAndInvlpgRemovesTheStaleEntry() {
        PageTables pt = m.tables(4);
        long leaf = pt.map(VA, OLD, Pte.SHIFT_4K, Pte.P | Pte.RW);
        Mmu mmu = m.mmu(MmuConfig.defaults(), pt);
        assertEquals(OLD + 8, hpa(mmu, VA + 8, Access.READ));
        assertEquals(OLD + 16, hpa(mmu, VA + 16, Access.READ));
        assertEquals(1, mmu.stats().tlbHits());
        assertEquals(128 * 12 + 2 * 8 * 4, mmu.tlb().capacity(), "default geometry");
        assertEquals(1, mmu.tlb().occupancy(), "one 4 KiB entry");
        assertEquals(1, mmu.stats().walks());

        pt.write(leaf, Pte.entry(NEW, Pte.P | Pte.RW));
        assertEquals(OLD, hpa(mmu, VA, Access.READ), "stale until invalidated");
        mmu.invlpg(VA + 0xABC);
        assertEquals(0, mmu.tlb().occupancy(), "INVLPG removed it");
        assertEquals(NEW, hpa(mmu, VA, Access.READ));
    }

    @Test
    void invlpgOfAnyAddressInsideA2MiBPageRemovesIt() {
        PageTables pt = m.tables(4);
        long va = 0x0000_0040_0020_0000L;
        long leaf = pt.map(va, 0x0060_0000L, Pte.SHIFT_2M, Pte.P | Pte.RW);
        Mmu mmu = m.mmu(MmuConfig.defaults(), pt);
        assertEquals(0x0060_1000L, hpa(mmu, va + 0x1000, Access.READ));
        pt.write(leaf, Pte.entry(0x0080_0000L, Pte.P | Pte.RW | Pte.PS));
        assertEquals(0x0060_5000L, hpa(mmu, va + 0x5000, Access.READ), "one entry covers the whole 2 MiB page");
        mmu.invlpg(va + 0x1F_F008);
        assertEquals(0x0080_5000L, hpa(mmu, va + 0x5000, Access.READ));
    }

    @Test
    void invlpgRemovesEveryEntrySplinteredFromA2MiBGuestPage() {
        PageTables guest = m.guestTables(4);
        long va = 0x0000_0040_0020_0000L;
        long pde = guest.map(va, 0x0040_0000L, Pte.SHIFT_2M, Pte.P | Pte.RW);
        Mmu mmu = m.nestedMmu(MmuConfig.defaults(), guest, m.ept(4), false);
        for (long off = 0; off < 0x20_0000; off += 0x4_0000) {
            assertEquals(Machine.GUEST_BASE + 0x0040_0000L + off, hpa(mmu, va + off, Access.READ));
        }
        guest.write(pde, Pte.entry(0x0060_0000L, Pte.P | Pte.RW | Pte.PS));
        assertEquals(Machine.GUEST_BASE + 0x0040_0000L + 0x8_0000, hpa(mmu, va + 0x8_0000, Access.READ), "stale");
        mmu.invlpg(va + 0x1234);
        for (long off = 0; off < 0x20_0000; off += 0x4_0000) {
            assertEquals(Machine.GUEST_BASE + 0x0060_0000L + off, hpa(mmu, va + off, Access.READ),
                "no 4 KiB piece of the old 2 MiB page survives INVLPG at offset " + off);
        }
    }

    @Test
    void pcidTagsKeepAddressSpacesApartAndNoFlushKeepsThem() {
        PageTables a = m.tables(4);
        PageTables b = m.tables(4);
        long leafA = a.map(VA, OLD, Pte.SHIFT_4K, Pte.P | Pte.RW);
        b.map(VA, NEW, Pte.SHIFT_4K, Pte.P | Pte.RW);
        Mmu mmu = m.mmu(MmuConfig.defaults(), a, CR0_PG | CR0_WP, CR4_PCIDE, EFER_NXE);
        mmu.movToCr3(a.root() | 1);
        assertEquals(OLD, hpa(mmu, VA, Access.READ));
        mmu.movToCr3(b.root() | 2);
        assertEquals(NEW, hpa(mmu, VA, Access.READ), "same address, other PCID, other frame");

        a.write(leafA, Pte.entry(0x0030_0000L, Pte.P | Pte.RW));
        mmu.movToCr3(a.root() | 1 | CR3_NO_FLUSH);
        long hits = mmu.stats().tlbHits();
        assertEquals(OLD, hpa(mmu, VA, Access.READ), "bit 63 kept PCID 1's entries (stale, as allowed)");
        assertEquals(hits + 1, mmu.stats().tlbHits());
        assertEquals(0, mmu.registers().cr3() & CR3_NO_FLUSH, "the no-flush bit is not stored");
        mmu.movToCr3(b.root() | 2 | CR3_NO_FLUSH);
        assertEquals(NEW, hpa(mmu, VA, Access.READ));
        mmu.movToCr3(a.root() | 1);
        assertEquals(0x0030_0000L, hpa(mmu, VA, Access.READ), "a CR3 load without bit 63 flushed PCID 1");
    }

    @Test
    void invpcidSingleContextFlushesOnlyThatPcid() {
        PageTables a = m.tables(4);
        PageTables b = m.tables(4);
        long leafA = a.map(VA, OLD, Pte.SHIFT_4K, Pte.P | Pte.RW);
        long leafB = b.map(VA, OLD + 0x1000, Pte.SHIFT_4K, Pte.P | Pte.RW);
        Mmu mmu = m.mmu(MmuConfig.defaults(), a, CR0_PG | CR0_WP, CR4_PCIDE, EFER_NXE);
        mmu.movToCr3(a.root() | 1);
        hpa(mmu, VA, Access.READ);
        mmu.movToCr3(b.root() | 2);
        hpa(mmu, VA, Access.READ);
        a.write(leafA, Pte.entry(NEW, Pte.P | Pte.RW));
        b.write(leafB, Pte.entry(NEW + 0x1000, Pte.P | Pte.RW));
        mmu.invpcid(Mmu.INVPCID_SINGLE_CONTEXT, 1, 0);
        assertEquals(OLD + 0x1000, hpa(mmu, VA, Access.READ), "PCID 2 untouched");
        mmu.movToCr3(a.root() | 1 | CR3_NO_FLUSH);
        assertEquals(NEW, hpa(mmu, VA, Access.READ), "PCID 1 flushed");
        mmu.invpcid(Mmu.INVPCID_ALL_EXCLUDING_GLOBAL, 0, 0);
        mmu.movToCr3(b.root() | 2 | CR3_NO_FLUSH);
        assertEquals(NEW + 0x1000, hpa(mmu, VA, Access.READ), "all PCIDs flushed");
        assertThrows(IllegalArgumentException.class, () -> mmu.invpcid(7, 0, 0));
    }

    @Test
    void globalPagesSurviveCr3LoadsUntilInvpcidAll() {
        PageTables pt = m.tables(4);
        long kernelVa = 0xFFFF_8000_0010_0000L;
        long kernelLeaf = pt.map(kernelVa, OLD, Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.G);
        long userLeaf = pt.map(VA, OLD + 0x1000, Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.US);
        Mmu mmu = m.mmu(MmuConfig.defaults(), pt, CR0_PG | CR0_WP, CR4_PGE, EFER_NXE);
        hpa(mmu, kernelVa, Access.READ);
        hpa(mmu, VA, Access.USER);
        pt.write(kernelLeaf, Pte.entry(NEW, Pte.P | Pte.RW | Pte.G));
        pt.write(userLeaf, Pte.entry(NEW + 0x1000, Pte.P | Pte.RW | Pte.US));
        mmu.movToCr3(pt.root());
        assertEquals(OLD, hpa(mmu, kernelVa, Access.READ), "global entry survived the CR3 load");
        assertEquals(NEW + 0x1000, hpa(mmu, VA, Access.USER), "non-global entry did not");
        mmu.invpcid(Mmu.INVPCID_ALL_INCLUDING_GLOBAL, 0, 0);
        assertEquals(NEW, hpa(mmu, kernelVa, Access.READ));
    }

    @Test
    void globalBitCountsOnlyWithCr4Pge() {
        PageTables pt = m.tables(4);
        long kernelVa = 0xFFFF_8000_0010_0000L;
        long leaf = pt.map(kernelVa, OLD, Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.G);
        Mmu mmu = m.mmu(MmuConfig.defaults(), pt);
        hpa(mmu, kernelVa, Access.READ);
        pt.write(leaf, Pte.entry(NEW, Pte.P | Pte.RW | Pte.G));
        mmu.movToCr3(pt.root());
        assertEquals(NEW, hpa(mmu, kernelVa, Access.READ));
    }

    @Test
    void vpidTagsKeepVirtualMachinesApart() {
        PageTables guest = m.guestTables(4);
        guest.map(VA, 0x0010_0000L, Pte.SHIFT_4K, Pte.P | Pte.RW);
        PageTables ept1 = m.ept(4);
        PageTables ept2 = new PageTables(m.memory, PageTables.Format.EPT, 4, m.hostTables);
        for (long gpa = 0; gpa < Machine.GUEST_SIZE; gpa += 4096) {
            ept2.map(gpa, Machine.GUEST_BASE + gpa, Pte.SHIFT_4K, Ept.RWX | Ept.MEMORY_TYPE_WB);
        }
        ept2.map(0x0010_0000L, 0x0300_0000L, Pte.SHIFT_4K, Ept.RWX | Ept.MEMORY_TYPE_WB); // VM 2's frame differs
        Mmu mmu = m.nestedMmu(MmuConfig.defaults(), guest, ept1, false);
        long eptp1 = mmu.eptp();
        long eptp2 = Ept.eptp(ept2.root(), 4, false);
        assertEquals(Machine.GUEST_BASE + 0x0010_0000L, hpa(mmu, VA, Access.READ));
        mmu.enter(2, eptp2);
        assertEquals(0x0300_0000L, hpa(mmu, VA, Access.READ), "same GVA and PCID, other VPID, other frame");
        mmu.enter(1, eptp1);
        long hits = mmu.stats().tlbHits();
        assertEquals(Machine.GUEST_BASE + 0x0010_0000L, hpa(mmu, VA, Access.READ));
        assertEquals(hits + 1, mmu.stats().tlbHits(), "VPID 1's entry survived running VPID 2");

        ept1.write(ept1.leafAddress(0x0010_0000L), Ept.entry(0x0310_0000L, Ept.RWX | Ept.MEMORY_TYPE_WB));
        mmu.invvpid(2);
        assertEquals(Machine.GUEST_BASE + 0x0010_0000L, hpa(mmu, VA, Access.READ), "INVVPID 2 left VPID 1 alone");
        mmu.invept(eptp1);
        assertEquals(0x0310_0000L, hpa(mmu, VA, Access.READ), "INVEPT dropped the combined mapping");
    }

    @Test
    void aCleanEntryDoesNotLetAWriteSkipSettingDirty() {
        PageTables pt = m.tables(4);
        long leaf = pt.map(VA, OLD, Pte.SHIFT_4K, Pte.P | Pte.RW);
        Mmu mmu = m.mmu(MmuConfig.defaults(), pt);
        hpa(mmu, VA, Access.READ);
        assertEquals(0, pt.read(leaf) & Pte.D);
        long walks = mmu.stats().walks();
        hpa(mmu, VA, Access.WRITE);
        assertEquals(walks + 1, mmu.stats().walks(), "the write walked");
        assertTrue((pt.read(leaf) & Pte.D) != 0, "and set D");
        hpa(mmu, VA + 8, Access.WRITE);
        assertEquals(walks + 1, mmu.stats().walks(), "then the dirty entry serves writes");

        // the same with EPT A/D: a clean EPT leaf must be made dirty by a walk
        PageTables guest = m.guestTables(4);
        guest.map(VA, 0x0010_0000L, Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.D | Pte.A);
        PageTables ept = m.ept(4);
        Mmu nested = m.nestedMmu(MmuConfig.defaults(), guest, ept, true);
        hpa(nested, VA, Access.READ);
        long eptLeaf = ept.leafAddress(0x0010_0000L);
        assertEquals(0, ept.read(eptLeaf) & Ept.D);
        hpa(nested, VA, Access.WRITE);
        assertTrue((ept.read(eptLeaf) & Ept.D) != 0, "EPT D set by the write despite a cached translation");
    }

    @Test
    void permissionChecksApplyOnHitsAndAFaultDropsTheEntry() {
        PageTables pt = m.tables(4);
        long leaf = pt.map(VA, OLD, Pte.SHIFT_4K, Pte.P | Pte.US);
        Mmu mmu = m.mmu(MmuConfig.defaults(), pt);
        hpa(mmu, VA, Access.USER);
        assertEquals(-1, mmu.translate(VA, Access.USER | Access.WRITE));
        assertEquals(0x7, mmu.lastTranslation().errorCode);
        pt.write(leaf, Pte.entry(NEW, Pte.P | Pte.US | Pte.RW));
        assertEquals(NEW, hpa(mmu, VA, Access.USER), "the #PF invalidated the faulting address's entry");
    }

    @Test
    void pagingStructureCachesCutReferencesAndCanBeSwitchedOff() {
        PageTables pt = m.tables(4);
        pt.map(VA, OLD, Pte.SHIFT_4K, Pte.P | Pte.RW);
        pt.map(VA + 0x1000, OLD + 0x1000, Pte.SHIFT_4K, Pte.P | Pte.RW);
        Mmu psc = m.mmu(MmuConfig.uncached().withPagingStructureCache(32), pt);
        assertEquals(Fault.NONE, psc.translate(VA, Access.READ, t));
        assertEquals(4, t.refs);
        assertEquals(Fault.NONE, psc.translate(VA + 0x1000, Access.READ, t));
        assertEquals(1, t.refs, "PDE-cache hit: only the PTE is read");
        assertEquals(1, psc.stats().pscHits());
        Mmu off = m.mmu(MmuConfig.uncached(), pt);
        off.translate(VA, Access.READ, t);
        off.translate(VA + 0x1000, Access.READ, t);
        assertEquals(4, t.refs);
        assertEquals(0, off.stats().pscHits());

        // 2D: warm paging-structure and nested caches turn 24 references into 1
        PageTables guest = m.guestTables(4);
        guest.map(VA, 0x0010_0000L, Pte.SHIFT_4K, Pte.P | Pte.RW);
        PageTables ept = m.ept(4);
        Mmu warm = m.nestedMmu(MmuConfig.uncached().withPagingStructureCache(32).withNestedCache(64), guest, ept, false);
        warm.translate(VA, Access.READ, t);
        assertEquals(24, t.refs);
        warm.translate(VA + 8, Access.READ, t);
        assertEquals(1, t.refs, "PDE-cache hit + nested-cache hit for the final GPA");
        assertTrue(warm.stats().nestedHits() > 0);
        Mmu nestedOnly = m.nestedMmu(MmuConfig.uncached().withNestedCache(64), guest, ept, false);
        nestedOnly.translate(VA, Access.READ, t);
        nestedOnly.translate(VA, Access.READ, t);
        assertEquals(4, t.refs, "nested cache alone: the 4 guest entries, no EPT references");
    }

    @Test
    void cr3LoadDropsPagingStructureCacheEntriesOfThatPcid() {
        PageTables pt = m.tables(4);
        pt.map(VA, OLD, Pte.SHIFT_4K, Pte.P | Pte.RW);
        long pde = pt.entryAddress(VA, Pte.LEVEL_PD);
        Mmu mmu = m.mmu(MmuConfig.uncached().withPagingStructureCache(32), pt);
        mmu.translate(VA, Access.READ, t);
        // move the page table: a PSC that survived the CR3 load would keep reading the old PT
        PageTables other = m.tables(4);
        other.map(VA, NEW, Pte.SHIFT_4K, Pte.P | Pte.RW);
        pt.write(pde, pt.read(other.entryAddress(VA, Pte.LEVEL_PD)));
        mmu.movToCr3(pt.root());
        assertEquals(Fault.NONE, mmu.translate(VA, Access.READ, t));
        assertEquals(NEW, t.hpa);
    }

    @Test
    void reservedBitsInCr3AndEptpAreRejectedLikeHardware() {
        PageTables pt = m.tables(4);
        Mmu mmu = m.mmu(MmuConfig.defaults(), pt);
        assertThrows(IllegalArgumentException.class, () -> mmu.movToCr3(pt.root() | (1L << 50)), "above MAXPHYADDR 46");
        assertThrows(IllegalArgumentException.class, () -> mmu.movToCr3(pt.root() | CR3_NO_FLUSH), "bit 63 without PCIDE");
        long eptp = Ept.eptp(0x0200_0000L, 4, true);
        mmu.enter(1, eptp);
        assertThrows(IllegalArgumentException.class, () -> mmu.enter(1, eptp & ~7L | 2), "memory type 2");
        assertThrows(IllegalArgumentException.class, () -> mmu.enter(1, eptp | (1L << 8)), "reserved bit 8");
        assertThrows(IllegalArgumentException.class, () -> mmu.enter(1, (eptp & ~Ept.EPTP_WALK_MASK) | (1L << 3)), "2-level walk");
        assertThrows(IllegalArgumentException.class, () -> mmu.enter(70_000, 0), "VPID is 16 bits");
    }
}
