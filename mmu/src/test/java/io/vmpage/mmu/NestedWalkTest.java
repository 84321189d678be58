package io.vmpage.mmu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** 2D walks: guest paging over EPT (SDM vol. 3C ch. 29), reference counts, violations, misconfigurations, A/D. */
class NestedWalkTest {
    private static final long VA = 0x0000_7F12_3456_7000L;
    private static final long DATA_GPA = 0x0020_3000L;
    private static final long QUAL_R = Fault.QUAL_READ;
    private static final long QUAL_W = Fault.QUAL_WRITE;
    private static final long GLA = Fault.QUAL_GLA_VALID;
    private static final long FINAL = Fault.QUAL_FINAL_TRANSLATION;

    private final Machine m = new Machine();
    private final Translation t = new Translation();

    @AfterEach
    void close() {
        m.close();
    }

    @Test
    void cold4over4WalkMakes24References() {
        PageTables guest = m.guestTables(4);
        guest.map(VA, DATA_GPA, Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.US);
        PageTables ept = m.ept(4);
        Mmu mmu = m.nestedMmu(MmuConfig.uncached(), guest, ept, false);
        assertEquals(Fault.NONE, mmu.translate(VA + 0x42, Access.USER, t), t.toString());
        assertEquals(DATA_GPA + 0x42, t.gpa);
        assertEquals(Machine.GUEST_BASE + DATA_GPA + 0x42, t.hpa);
        assertEquals(24, t.refs, "(4+1)(4+1)-1");
    }

    @Test
    void cold5over5WalkMakes35References() {
        long va = 0x00AB_CDEF_1234_5000L;
        PageTables guest = m.guestTables(5);
        guest.map(va, DATA_GPA, Pte.SHIFT_4K, Pte.P | Pte.RW);
        PageTables ept = m.ept(5);
        Mmu mmu = m.nestedMmu(MmuConfig.uncached(), guest, ept, true);
        assertEquals(Fault.NONE, mmu.translate(va, Access.WRITE, t), t.toString());
        assertEquals(Machine.GUEST_BASE + DATA_GPA, t.hpa);
        assertEquals(35, t.refs, "(5+1)(5+1)-1");
    }

    @Test
    void pageSizeIsTheSmallerOfGuestAndEptPage() {
        PageTables guest = m.guestTables(4);
        long va2m = 0x0000_0040_0020_0000L;
        guest.map(va2m, 0x0040_0000L, Pte.SHIFT_2M, Pte.P | Pte.RW);
        PageTables ept4k = m.ept(4);
        Mmu mmu = m.nestedMmu(MmuConfig.uncached(), guest, ept4k, false);
        assertEquals(Fault.NONE, mmu.translate(va2m + 0x1_2345, Access.READ, t));
        assertEquals(Machine.GUEST_BASE + 0x0040_0000L + 0x1_2345, t.hpa);
        assertEquals(Pte.SHIFT_4K, t.pageShift, "a 2 MiB guest page over 4 KiB EPT pages is splintered");
        assertEquals(3 * 5 + 4, t.refs);

        // a 2 MiB EPT page under the 2 MiB guest page gives a 2 MiB translation
        PageTables ept2m = new PageTables(m.memory, PageTables.Format.EPT, 4, m.hostTables);
        for (long gpa = 0; gpa < Machine.GUEST_SIZE; gpa += 2 * Machine.MIB) {
            ept2m.map(gpa, Machine.GUEST_BASE + gpa, Pte.SHIFT_2M, Ept.RWX | Ept.MEMORY_TYPE_WB);
        }
        Mmu big = m.nestedMmu(MmuConfig.uncached(), guest, ept2m, false);
        assertEquals(Fault.NONE, big.translate(va2m + 0x1_2345, Access.READ, t));
        assertEquals(Machine.GUEST_BASE + 0x0040_0000L + 0x1_2345, t.hpa);
        assertEquals(Pte.SHIFT_2M, t.pageShift);
        assertEquals(3 * 4 + 3, t.refs, "3 guest levels, each and the final GPA over a 3-level EPT path");
    }

    @Test
    void eptViolationOnTheFinalTranslation() {
        PageTables guest = m.guestTables(4);
        guest.map(VA, DATA_GPA, Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.US);
        PageTables ept = m.ept(4);
        long leaf = ept.leafAddress(DATA_GPA);
        ept.write(leaf, Ept.entry(Machine.GUEST_BASE + DATA_GPA, Ept.R | Ept.X | Ept.MEMORY_TYPE_WB)); // read-only
        Mmu mmu = m.nestedMmu(MmuConfig.uncached(), guest, ept, false);
        assertEquals(Fault.NONE, mmu.translate(VA, Access.USER, t));
        assertEquals(Fault.EPT_VIOLATION, mmu.translate(VA + 8, Access.USER | Access.WRITE, t));
        assertEquals(DATA_GPA + 8, t.faultAddress, "the guest-physical address is reported");
        assertEquals(QUAL_W | Fault.QUAL_READABLE | Fault.QUAL_EXECUTABLE | GLA | FINAL, t.qualification);
        assertTrue((guest.read(guest.leafAddress(VA)) & Pte.D) != 0,
            "the guest walk completed (and set D) before the final translation faulted");

        ept.write(leaf, Ept.entry(Machine.GUEST_BASE + DATA_GPA, Ept.R | Ept.W | Ept.MEMORY_TYPE_WB)); // no X
        assertEquals(Fault.EPT_VIOLATION, mmu.translate(VA, Access.USER | Access.FETCH, t));
        assertEquals(Fault.QUAL_FETCH | Fault.QUAL_READABLE | Fault.QUAL_WRITABLE | GLA | FINAL, t.qualification);

        ept.write(leaf, 0); // not present
        assertEquals(Fault.EPT_VIOLATION, mmu.translate(VA, Access.USER, t));
        assertEquals(QUAL_R | GLA | FINAL, t.qualification, "nothing readable/writable/executable");
    }

    @Test
    void eptViolationOnAGuestPagingStructure() {
        PageTables guest = m.guestTables(4);
        guest.map(VA, DATA_GPA, Pte.SHIFT_4K, Pte.P | Pte.RW);
        PageTables ept = m.ept(4);
        long pdeGpa = guest.entryAddress(VA, Pte.LEVEL_PD);
        long pdGpa = pdeGpa & ~0xFFFL;
        ept.unmap(pdGpa);
        Mmu mmu = m.nestedMmu(MmuConfig.uncached(), guest, ept, false);
        assertEquals(Fault.EPT_VIOLATION, mmu.translate(VA, Access.READ, t));
        assertEquals(pdeGpa, t.faultAddress, "the GPA of the guest PDE");
        assertEquals(QUAL_R | GLA, t.qualification, "bit 8 clear: an access to a guest paging structure");
        assertEquals(2 * 5 + 4, t.refs, "PML4E and PDPTE done, then the PD's 4 EPT references");
    }

    @Test
    void guestAccessedFlagUpdatesAreWritesToGuestMemory() {
        PageTables guest = m.guestTables(4);
        guest.map(VA, DATA_GPA, Pte.SHIFT_4K, Pte.P | Pte.RW);
        PageTables ept = m.ept(4);
        long pteGpa = guest.entryAddress(VA, Pte.LEVEL_PT);
        long ptGpa = pteGpa & ~0xFFFL;
        long ptEptLeaf = ept.leafAddress(ptGpa);
        ept.write(ptEptLeaf, Ept.entry(Machine.GUEST_BASE + ptGpa, Ept.R | Ept.MEMORY_TYPE_WB)); // guest PT read-only

        Mmu mmu = m.nestedMmu(MmuConfig.uncached(), guest, ept, false);
        assertEquals(Fault.EPT_VIOLATION, mmu.translate(VA, Access.READ, t), "setting A in the PTE needs EPT write");
        assertEquals(pteGpa, t.faultAddress);
        assertEquals(QUAL_W | Fault.QUAL_READABLE | GLA, t.qualification);

        guest.write(pteGpa, guest.read(pteGpa) | Pte.A); // A already set: a read needs no write
        assertEquals(Fault.NONE, mmu.translate(VA, Access.READ, t), t.toString());
        assertEquals(Fault.EPT_VIOLATION, mmu.translate(VA, Access.WRITE, t), "setting D needs EPT write");

        // With EPT A/D on, every guest paging-structure access counts as a write (SDM 29.3.3.2) and its
        // EPT violation sets both bit 0 and bit 1.
        Mmu ad = m.nestedMmu(MmuConfig.uncached(), guest, ept, true);
        assertEquals(Fault.EPT_VIOLATION, ad.translate(VA, Access.READ, t));
        assertEquals(pteGpa, t.faultAddress);
        assertEquals(QUAL_R | QUAL_W | Fault.QUAL_READABLE | GLA, t.qualification);
    }

    @Test
    void withEptAccessedAndDirtyFlagsAGuestPagingStructureAccessReportsReadAndWrite() {
        PageTables guest = m.guestTables(4);
        guest.map(VA, DATA_GPA, Pte.SHIFT_4K, Pte.P | Pte.RW);
        PageTables ept = m.ept(4);
        long pdeGpa = guest.entryAddress(VA, Pte.LEVEL_PD);
        ept.unmap(pdeGpa & ~0xFFFL);
        for (int access : new int[] {Access.READ, Access.WRITE, Access.FETCH, Access.USER | Access.READ}) {
            Mmu noAd = m.nestedMmu(MmuConfig.uncached(), guest, ept, false);
            assertEquals(Fault.EPT_VIOLATION, noAd.translate(VA, access, t));
            assertEquals(pdeGpa, t.faultAddress);
            assertEquals(QUAL_R | GLA, t.qualification, "without EPT A/D a guest table read is a data read only");

            Mmu ad = m.nestedMmu(MmuConfig.uncached(), guest, ept, true);
            assertEquals(Fault.EPT_VIOLATION, ad.translate(VA, access, t));
            assertEquals(pdeGpa, t.faultAddress);
            assertEquals(QUAL_R | QUAL_W | GLA, t.qualification,
                "with EPT A/D: bits 0 and 1 whatever the guest's access, bit 8 clear, nothing permitted");
        }
    }

    @Test
    void withEptAccessedAndDirtyFlagsAnAccessedFlagUpdateThroughThePagingStructureCacheReportsReadAndWrite() {
        PageTables guest = m.guestTables(4);
        guest.map(VA, DATA_GPA, Pte.SHIFT_4K, Pte.P | Pte.RW);
        PageTables ept = m.ept(4);
        long pteGpa = guest.entryAddress(VA, Pte.LEVEL_PT);
        long ptGpa = pteGpa & ~0xFFFL;
        ept.write(ept.leafAddress(ptGpa), Ept.entry(Machine.GUEST_BASE + ptGpa, Ept.R | Ept.MEMORY_TYPE_WB));
        guest.write(pteGpa, guest.read(pteGpa) | Pte.A);

        // Without EPT A/D the read-only guest PT can be read; the walk caches the PDE (and the PT's EPT rights).
        Mmu mmu = m.nestedMmu(MmuConfig.uncached().withPagingStructureCache(32), guest, ept, false);
        assertEquals(Fault.NONE, mmu.translate(VA, Access.READ, t), t.toString());
        guest.write(pteGpa, guest.read(pteGpa) & ~Pte.A);
        assertEquals(Fault.EPT_VIOLATION, mmu.translate(VA, Access.READ, t), "setting A needs EPT write");
        assertEquals(QUAL_W | Fault.QUAL_READABLE | GLA, t.qualification, "without EPT A/D: a data write");

        guest.write(pteGpa, guest.read(pteGpa) | Pte.A);
        assertEquals(Fault.NONE, mmu.translate(VA, Access.READ, t), t.toString());
        guest.write(pteGpa, guest.read(pteGpa) & ~Pte.A);
        mmu.enter(1, Ept.eptp(ept.root(), ept.levels(), true)); // same VPID: the cached PDE still serves
        assertEquals(Fault.EPT_VIOLATION, mmu.translate(VA, Access.READ, t));
        assertEquals(pteGpa, t.faultAddress);
        assertEquals(QUAL_R | QUAL_W | Fault.QUAL_READABLE | GLA, t.qualification,
            "with EPT A/D: a guest paging-structure access, bits 0 and 1");
    }

    @Test
    void eptAccessedAndDirtyFlags() {
        PageTables guest = m.guestTables(4);
        guest.map(VA, DATA_GPA, Pte.SHIFT_4K, Pte.P | Pte.RW);
        PageTables ept = m.ept(4);
        long dataLeaf = ept.leafAddress(DATA_GPA);
        long ptLeaf = ept.leafAddress(guest.entryAddress(VA, Pte.LEVEL_PT) & ~0xFFFL);

        Mmu noAd = m.nestedMmu(MmuConfig.uncached(), guest, ept, false);
        assertEquals(Fault.NONE, noAd.translate(VA, Access.WRITE, t));
        assertEquals(0, ept.read(dataLeaf) & (Ept.A | Ept.D), "without EPTP.AD the EPT flags are untouched");

        Mmu ad = m.nestedMmu(MmuConfig.uncached(), guest, ept, true);
        assertEquals(Fault.NONE, ad.translate(VA, Access.READ, t));
        assertEquals(Ept.A, ept.read(dataLeaf) & (Ept.A | Ept.D), "a read sets EPT A only");
        assertEquals(Ept.A | Ept.D, ept.read(ptLeaf) & (Ept.A | Ept.D), "guest table accesses count as writes");
        assertTrue((ept.read(ept.entryAddress(DATA_GPA, 2)) & Ept.A) != 0, "A in the EPT PDE used");
        assertEquals(Fault.NONE, ad.translate(VA, Access.WRITE, t));
        assertEquals(Ept.A | Ept.D, ept.read(dataLeaf) & (Ept.A | Ept.D), "a write sets EPT D");
    }

    @Test
    void eptMisconfigurations() {
        PageTables guest = m.guestTables(4);
        guest.map(VA, DATA_GPA, Pte.SHIFT_4K, Pte.P | Pte.RW);
        PageTables ept = m.ept(4);
        long leaf = ept.leafAddress(DATA_GPA);
        long good = ept.read(leaf);
        Mmu mmu = m.nestedMmu(MmuConfig.uncached(), guest, ept, false);

        ept.write(leaf, (good & ~Ept.RWX) | Ept.W);
        assertEquals(Fault.EPT_MISCONFIG, mmu.translate(VA, Access.READ, t), "write without read");
        assertEquals(DATA_GPA, t.faultAddress);
        ept.write(leaf, (good & ~Ept.RWX) | Ept.W | Ept.X);
        assertEquals(Fault.EPT_MISCONFIG, mmu.translate(VA, Access.READ, t), "write+execute without read");
        ept.write(leaf, (good & ~Ept.MEMORY_TYPE_MASK) | (2L << Ept.MEMORY_TYPE_SHIFT));
        assertEquals(Fault.EPT_MISCONFIG, mmu.translate(VA, Access.READ, t), "memory type 2");
        ept.write(leaf, good | (1L << 47));
        assertEquals(Fault.EPT_MISCONFIG, mmu.translate(VA, Access.READ, t), "address bit above MAXPHYADDR");
        ept.write(leaf, (good & ~Ept.RWX) | Ept.X);
        assertEquals(Fault.NONE, mmu.translate(VA, Access.FETCH, t), "execute-only is a valid entry");
        assertEquals(Fault.EPT_VIOLATION, mmu.translate(VA, Access.READ, t), "but not readable");
        ept.write(leaf, good);

        long eptPml4e = ept.entryAddress(DATA_GPA, 4);
        ept.write(eptPml4e, ept.read(eptPml4e) | Ept.PS);
        assertEquals(Fault.EPT_MISCONFIG, mmu.translate(VA, Access.READ, t), "PS in an EPT PML4E");
    }
}
