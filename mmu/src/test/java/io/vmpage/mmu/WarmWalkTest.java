package io.vmpage.mmu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The warm walk (PDE-cache hit, one PTE read, nested-cache hit) must be indistinguishable from the
 * general walk: for every combination of upper-level rights, leaf flags, access, CR0.WP and (2D) EPT rights of the data
 * page, a translation through warm caches gives the same fault, error code, qualification, addresses and
 * page size as an uncached walk of the same tables, and leaves the same A/D bits in the guest leaf and
 * the EPT leaf.
 */
class WarmWalkTest {
    private static final long VA = 0x0000_7F12_3456_7000L;
    /** A page in the same page table as {@link #VA}, mapping the same data: it warms both caches. */
    private static final long ALIAS_VA = VA + 0x1000;
    private static final long DATA_GPA = 0x0020_3000L;
    private static final long DATA_HOST = 0x0010_3000L;
    private static final int[] ACCESSES = {Access.READ, Access.WRITE, Access.USER, Access.USER | Access.WRITE,
        Access.FETCH, Access.USER | Access.FETCH};

    private final Machine m = new Machine();

    @AfterEach
    void close() {
        m.close();
    }

    @ParameterizedTest(name = "nested {0}, EPT A/D {1}")
    @CsvSource({"false, false", "true, false", "true, true"})
    void warmWalksMatchUncachedWalks(boolean nested, boolean eptAd) {
        PageTables guest = nested ? m.guestTables(4) : m.tables(4);
        PageTables ept = nested ? m.ept(4) : null;
        long data = nested ? DATA_GPA : DATA_HOST;
        guest.map(VA, data, Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.US | Pte.A | Pte.D);
        guest.map(ALIAS_VA, data, Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.US | Pte.A | Pte.D);
        long leaf = guest.entryAddress(VA, Pte.LEVEL_PT);
        long eptLeaf = nested ? ept.entryAddress(DATA_GPA, 1) : 0;
        MmuConfig warmConfig = MmuConfig.uncached().withPagingStructureCache(8).withNestedCache(16);
        int warmTaken = 0;
        int cases = 0;
        // EPT rights of the data page, and its EPT A/D bits (they matter with EPT A/D on)
        long[][] eptCases = {{Ept.RWX, 0}, {Ept.R, 0}, {Ept.R | Ept.X, 0}, {Ept.R | Ept.W, 0}, {Ept.RWX, Ept.A | Ept.D},
            {Ept.RWX, Ept.A}};
        // Rights of the upper levels, which the PDE cache carries: as mapped, then without R/W, U/S, with NX
        long pde = guest.entryAddress(VA, Pte.LEVEL_PD);
        long pdeMapped = guest.read(pde);
        long[] pdes = {pdeMapped, pdeMapped & ~Pte.RW, pdeMapped & ~Pte.US, pdeMapped | Pte.NX};
        for (long upper : pdes) {
            guest.write(pde, upper);
            for (long[] eptCase : nested ? eptCases : new long[][] {{0, 0}}) {
                for (int flags = 0; flags < 64; flags++) {
                    long pte = Pte.entry(data, Pte.P | bit(flags, 0, Pte.RW) | bit(flags, 1, Pte.US) | bit(flags, 2, Pte.NX)
                        | bit(flags, 3, Pte.A) | bit(flags, 4, Pte.D) | bit(flags, 5, Pte.G));
                    long eptEntry = nested
                        ? Pte.entry(Machine.GUEST_BASE + DATA_GPA, eptCase[0] | Ept.MEMORY_TYPE_WB | eptCase[1]) : 0;
                    for (int access : ACCESSES) {
                        for (boolean wp : new boolean[] {true, false}) {
                            long cr0 = ControlRegisters.CR0_PG | (wp ? ControlRegisters.CR0_WP : 0);
                            String label = "pde " + MachineMemory.hex(upper) + " pte " + MachineMemory.hex(pte)
                                + " ept " + MachineMemory.hex(eptEntry) + " "
                                + Access.describe(access) + (wp ? " WP" : "");

                            // Both translate the alias first (it sets the data page's EPT A flag under EPT A/D),
                            // so both start the measured translation from the same memory.
                            set(guest, leaf, pte, ept, eptLeaf, eptEntry);
                            Mmu reference = mmu(guest, ept, eptAd, MmuConfig.uncached(), cr0);
                            assertEquals(Fault.NONE, reference.translate(ALIAS_VA, Access.READ, new Translation()), label);
                            Translation want = new Translation();
                            reference.translate(VA, access, want);
                            long wantLeaf = guest.read(leaf);
                            long wantEptLeaf = nested ? ept.read(eptLeaf) : 0;

                            set(guest, leaf, pte, ept, eptLeaf, eptEntry);
                            Mmu warm = mmu(guest, ept, eptAd, warmConfig, cr0);
                            assertEquals(Fault.NONE, warm.translate(ALIAS_VA, Access.READ, new Translation()), label);
                            long walksBefore = warm.stats().walks();
                            long refsBefore = warm.stats().walkRefs();
                            Translation got = new Translation();
                            warm.translate(VA, access, got);

                            assertEquals(want.fault, got.fault, label);
                            assertEquals(want.errorCode, got.errorCode, label);
                            assertEquals(want.qualification, got.qualification, label);
                            assertEquals(want.faultAddress, got.faultAddress, label);
                            assertEquals(want.hpa, got.hpa, label);
                            assertEquals(want.gpa, got.gpa, label);
                            assertEquals(want.pageShift, got.pageShift, label);
                            assertEquals(wantLeaf, guest.read(leaf), label + ": guest leaf A/D");
                            if (nested) {
                                assertEquals(wantEptLeaf, ept.read(eptLeaf), label + ": EPT leaf A/D");
                            }
                            assertEquals(walksBefore + 1, warm.stats().walks(), label);
                            assertEquals(refsBefore + got.refs, warm.stats().walkRefs(), label + ": refs counted as reported");
                            if (got.refs == 1) {
                                warmTaken++;
                            }
                            cases++;
                        }
                    }
                }
            }
        }
        // Every permitted access to a leaf with A (and D for writes) set, under rights the EPT grants,
        // reads one entry; the rest took the general walk.
        assertTrue(warmTaken > cases / 10, warmTaken + " of " + cases + " translations took the one-reference path");
    }

    private static long bit(int flags, int index, long value) {
        return (flags >>> index & 1) != 0 ? value : 0;
    }

    private static void set(PageTables guest, long leaf, long pte, PageTables ept, long eptLeaf, long eptEntry) {
        guest.write(leaf, pte);
        if (ept != null) {
            ept.write(eptLeaf, eptEntry);
        }
    }

    private Mmu mmu(PageTables guest, PageTables ept, boolean eptAd, MmuConfig config, long cr0) {
        Mmu mmu = m.mmu(config, guest, cr0, ControlRegisters.CR4_SMEP, ControlRegisters.EFER_NXE);
        if (ept != null) {
            mmu.enter(1, Ept.eptp(ept.root(), ept.levels(), eptAd));
        }
        return mmu;
    }
}
