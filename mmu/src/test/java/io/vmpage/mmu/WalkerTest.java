package io.vmpage.mmu;

import static io.vmpage.mmu.ControlRegisters.CR0_PG;
import static io.vmpage.mmu.ControlRegisters.CR0_WP;
import static io.vmpage.mmu.ControlRegisters.CR4_SMEP;
import static io.vmpage.mmu.ControlRegisters.EFER_NXE;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/** 1D (non-nested) walks against the SDM vol. 3A ch. 4 rules, one rule per case. */
class WalkerTest {
    private static final long VA = 0x0000_7F12_3456_7000L;
    private static final long PA = 0x0010_0000L + 0x3000;
    private static final int SUP = 0;
    private static final int USER = Access.USER;

    private final Machine m = new Machine();
    private final Translation t = new Translation();

    @AfterEach
    void close() {
        m.close();
    }

    private Mmu uncached(PageTables pt) {
        return m.mmu(MmuConfig.uncached(), pt);
    }

    @Test
    void fourLevel4KiBPageTakesFourReferences() {
        PageTables pt = m.tables(4);
        pt.map(VA, PA, Pte.SHIFT_4K, Pte.P | Pte.RW);
        Mmu mmu = uncached(pt);
        assertEquals(Fault.NONE, mmu.translate(VA + 0x123, Access.READ, t));
        assertEquals(PA + 0x123, t.hpa);
        assertEquals(PA + 0x123, t.gpa);
        assertEquals(4096, t.pageSize());
        assertEquals(4, t.refs);
    }

    @Test
    void largePagesEndTheWalkEarly() {
        PageTables pt = m.tables(4);
        long va2m = 0x0000_0040_0020_0000L;
        long va1g = 0x0000_0080_4000_0000L;
        pt.map(va2m, 0x0060_0000L, Pte.SHIFT_2M, Pte.P | Pte.RW);
        pt.map(va1g, 0x4000_0000L, Pte.SHIFT_1G, Pte.P | Pte.RW);
        Mmu mmu = uncached(pt);
        assertEquals(Fault.NONE, mmu.translate(va2m + 0x1_2345, Access.READ, t));
        assertEquals(0x0060_0000L + 0x1_2345, t.hpa);
        assertEquals(2L << 20, t.pageSize());
        assertEquals(3, t.refs);
        assertEquals(Fault.NONE, mmu.translate(va1g + 0x1234_5678, Access.READ, t));
        assertEquals(0x4000_0000L + 0x1234_5678, t.hpa);
        assertEquals(1L << 30, t.pageSize());
        assertEquals(2, t.refs);
    }

    @Test
    void fiveLevelPagingTranslates57BitAddresses() {
        long va = 0x00AB_CDEF_1234_5000L; // bit 55 set: canonical only with LA57
        PageTables pt5 = m.tables(5);
        pt5.map(va, PA, Pte.SHIFT_4K, Pte.P);
        Mmu mmu = uncached(pt5);
        assertTrue(mmu.registers().la57());
        assertEquals(Fault.NONE, mmu.translate(va + 8, Access.READ, t));
        assertEquals(PA + 8, t.hpa);
        assertEquals(5, t.refs);
        // the same address under 4-level paging is not canonical
        Mmu four = uncached(m.tables(4));
        assertEquals(Fault.GENERAL_PROTECTION, four.translate(va, Access.READ, t));
        assertEquals(va, t.faultAddress);
        assertEquals(0, t.refs);
    }

    @Test
    void nonCanonicalAddressIsGeneralProtectionNotPageFault() {
        Mmu mmu = uncached(m.tables(4));
        assertEquals(Fault.GENERAL_PROTECTION, mmu.translate(0x0000_8000_0000_0000L, Access.READ, t));
        assertEquals(Fault.GENERAL_PROTECTION, mmu.translate(0xFFFF_7FFF_FFFF_F000L, Access.WRITE, t));
        // the upper canonical half walks (and here faults as not present)
        assertEquals(Fault.PAGE_FAULT, mmu.translate(0xFFFF_8000_0000_0000L, Access.READ, t));
        Mmu mmu5 = uncached(m.tables(5));
        assertEquals(Fault.GENERAL_PROTECTION, mmu5.translate(0x0100_0000_0000_0000L, Access.READ, t));
        assertEquals(Fault.PAGE_FAULT, mmu5.translate(0xFF00_0000_0000_0000L, Access.READ, t));
    }

    /** leaf flags, access, CR0.WP, CR4.SMEP, EFER.NXE, expected error code (-1: translation succeeds). */
    static Stream<Arguments> permissionRules() {
        long p = Pte.P;
        long rw = Pte.RW;
        long us = Pte.US;
        long nx = Pte.NX;
        int w = Access.WRITE;
        int f = Access.FETCH;
        return Stream.of(
            Arguments.of("user read of a user page", p | us, USER, true, false, true, -1),
            Arguments.of("user write of a read-only user page", p | us, USER | w, true, false, true, 0x7),
            Arguments.of("user write of a writable user page", p | us | rw, USER | w, true, false, true, -1),
            Arguments.of("user read of a supervisor page", p | rw, USER, true, false, true, 0x5),
            Arguments.of("user fetch of a supervisor page", p | rw, USER | f, true, false, true, 0x15),
            Arguments.of("supervisor write of read-only page, WP=0", p, SUP | w, false, false, true, -1),
            Arguments.of("supervisor write of read-only page, WP=1", p, SUP | w, true, false, true, 0x3),
            Arguments.of("supervisor write of read-only user page, WP=1", p | us, SUP | w, true, false, true, 0x3),
            Arguments.of("supervisor write of writable page, WP=1", p | rw, SUP | w, true, false, true, -1),
            Arguments.of("user fetch of an NX page with NXE", p | us | nx, USER | f, true, false, true, 0x15),
            Arguments.of("supervisor fetch of an NX page with NXE", p | nx, SUP | f, true, false, true, 0x11),
            Arguments.of("user read of an NX page with NXE", p | us | nx, USER, true, false, true, -1),
            Arguments.of("NX without NXE is a reserved bit", p | us | nx, USER, true, false, false, 0xD),
            Arguments.of("user fetch without NXE", p | us, USER | f, true, false, false, -1),
            Arguments.of("supervisor fetch of a user page, SMEP", p | us, SUP | f, true, true, false, 0x11),
            Arguments.of("supervisor fetch of a user page, no SMEP", p | us, SUP | f, true, false, false, -1),
            Arguments.of("supervisor read of a user page, SMEP", p | us, SUP, true, true, false, -1),
            Arguments.of("not present, user write", 0L, USER | w, true, false, true, 0x6),
            Arguments.of("not present, fetch with NXE sets I/D", 0L, SUP | f, true, false, true, 0x10),
            Arguments.of("not present, fetch without NXE or SMEP: no I/D", 0L, SUP | f, true, false, false, 0x0)
        );
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("permissionRules")
    void permissionsAndErrorCodes(String rule, long leafFlags, int access, boolean wp, boolean smep, boolean nxe,
                                  int expectedErrorCode) {
        PageTables pt = m.tables(4);
        long leaf = pt.map(VA, PA, Pte.SHIFT_4K, leafFlags);
        Mmu mmu = m.mmu(MmuConfig.uncached(), pt, CR0_PG | (wp ? CR0_WP : 0), smep ? CR4_SMEP : 0, nxe ? EFER_NXE : 0);
        int fault = mmu.translate(VA + 0x10, access, t);
        if (expectedErrorCode < 0) {
            assertEquals(Fault.NONE, fault, rule + ": " + t);
            assertEquals(PA + 0x10, t.hpa);
            long e = pt.read(leaf);
            assertTrue((e & Pte.A) != 0, "A set on a permitted access");
            assertEquals(Access.isWrite(access), (e & Pte.D) != 0, "D set exactly on writes");
        } else {
            assertEquals(Fault.PAGE_FAULT, fault, rule + ": " + t);
            assertEquals(expectedErrorCode, t.errorCode, rule);
            assertEquals(VA + 0x10, t.faultAddress, "CR2 holds the faulting linear address");
            if ((leafFlags & Pte.P) != 0) {
                assertEquals(0, pt.read(leaf) & Pte.D, "no D on a faulting access");
            }
        }
    }

    @Test
    void permissionsAndAcrossLevels() {
        PageTables pt = m.tables(4);
        pt.map(VA, PA, Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.US);
        long pde = pt.entryAddress(VA, Pte.LEVEL_PD);
        long pdpte = pt.entryAddress(VA, Pte.LEVEL_PDPT);
        Mmu mmu = uncached(pt);

        pt.write(pde, pt.read(pde) & ~Pte.US);
        assertEquals(Fault.PAGE_FAULT, mmu.translate(VA, USER, t), "U/S=0 in a PDE hides the page from user mode");
        assertEquals(0x5, t.errorCode);
        assertEquals(Fault.NONE, mmu.translate(VA, SUP, t));

        pt.write(pde, pt.read(pde) | Pte.US);
        pt.write(pdpte, pt.read(pdpte) & ~Pte.RW);
        assertEquals(Fault.PAGE_FAULT, mmu.translate(VA, USER | Access.WRITE, t), "R/W=0 in a PDPTE makes the page read-only");
        assertEquals(0x7, t.errorCode);
        assertEquals(Fault.NONE, mmu.translate(VA, USER, t));

        pt.write(pdpte, pt.read(pdpte) | Pte.RW | Pte.NX);
        assertEquals(Fault.PAGE_FAULT, mmu.translate(VA, USER | Access.FETCH, t), "NX in a PDPTE forbids fetch");
        assertEquals(0x15, t.errorCode);
        assertEquals(Fault.NONE, mmu.translate(VA, USER | Access.WRITE, t));
    }

    @Test
    void reservedBitsGiveRsvdPageFaults() {
        PageTables pt = m.tables(4);
        long va2m = 0x0000_0040_0020_0000L;
        long va1g = 0x0000_0080_4000_0000L;
        long leaf = pt.map(VA, PA, Pte.SHIFT_4K, Pte.P | Pte.RW);
        long leaf2m = pt.map(va2m, 0x0060_0000L, Pte.SHIFT_2M, Pte.P | Pte.RW);
        long leaf1g = pt.map(va1g, 0x4000_0000L, Pte.SHIFT_1G, Pte.P | Pte.RW);
        Mmu mmu = uncached(pt); // MAXPHYADDR 46
        long pml4e = pt.entryAddress(VA, Pte.LEVEL_PML4);

        pt.write(leaf, pt.read(leaf) | (1L << 46));
        assertEquals(Fault.PAGE_FAULT, mmu.translate(VA, Access.READ, t), "address bit at MAXPHYADDR");
        assertEquals(Fault.PF_P | Fault.PF_RSVD, t.errorCode);
        pt.write(leaf, pt.read(leaf) & ~(1L << 46));

        pt.write(pml4e, pt.read(pml4e) | Pte.PS);
        assertEquals(Fault.PAGE_FAULT, mmu.translate(VA, USER | Access.WRITE, t), "PS in a PML4E");
        assertEquals(Fault.PF_P | Fault.PF_RSVD | Fault.PF_W | Fault.PF_U, t.errorCode);
        pt.write(pml4e, pt.read(pml4e) & ~Pte.PS);

        pt.write(leaf2m, pt.read(leaf2m) | (1L << 13));
        assertEquals(Fault.PAGE_FAULT, mmu.translate(va2m, Access.READ, t), "2 MiB page address bit 13");
        assertEquals(0x9, t.errorCode);
        pt.write(leaf2m, (pt.read(leaf2m) & ~(1L << 13)) | (1L << 12));
        assertEquals(Fault.NONE, mmu.translate(va2m, Access.READ, t), "bit 12 of a large page is PAT, not reserved");

        pt.write(leaf1g, pt.read(leaf1g) | (1L << 20));
        assertEquals(Fault.PAGE_FAULT, mmu.translate(va1g, Access.READ, t), "1 GiB page address bit 20");
        assertEquals(0x9, t.errorCode);

        Mmu wide = m.mmu(MmuConfig.uncached().withMaxPhysAddrBits(52), pt, CR0_PG | CR0_WP, 0, EFER_NXE);
        pt.write(leaf, pt.read(leaf) | (1L << 46));
        assertEquals(Fault.NONE, wide.translate(VA, Access.READ, t), "bit 46 is an address bit with MAXPHYADDR 52");
    }

    @Test
    void accessedAndDirtyBits() {
        PageTables pt = m.tables(4);
        long leaf = pt.map(VA, PA, Pte.SHIFT_4K, Pte.P | Pte.RW);
        Mmu mmu = uncached(pt);
        assertEquals(Fault.NONE, mmu.translate(VA, Access.READ, t));
        for (int level = Pte.LEVEL_PML4; level > Pte.LEVEL_PT; level--) {
            assertTrue((pt.read(pt.entryAddress(VA, level)) & Pte.A) != 0, "A set at level " + level);
            assertEquals(0, pt.read(pt.entryAddress(VA, level)) & Pte.D, "no D in a non-leaf entry");
        }
        assertEquals(Pte.A, pt.read(leaf) & (Pte.A | Pte.D), "a read sets A only");
        assertEquals(Fault.NONE, mmu.translate(VA, Access.WRITE, t));
        assertEquals(Pte.A | Pte.D, pt.read(leaf) & (Pte.A | Pte.D), "a write sets D");

        long va2m = 0x0000_0040_0020_0000L;
        long leaf2m = pt.map(va2m, 0x0060_0000L, Pte.SHIFT_2M, Pte.P | Pte.RW);
        assertEquals(Fault.NONE, mmu.translate(va2m + 0x4000, Access.WRITE, t));
        assertEquals(Pte.A | Pte.D, pt.read(leaf2m) & (Pte.A | Pte.D), "D is set in the large-page leaf");
    }

    @Test
    void tableOutsideMachineMemoryIsReportedNotCrashed() {
        PageTables pt = m.tables(4);
        pt.map(VA, PA, Pte.SHIFT_4K, Pte.P | Pte.RW);
        long pde = pt.entryAddress(VA, Pte.LEVEL_PD);
        pt.write(pde, Pte.entry(0x10_0000_0000L, Pte.P | Pte.RW)); // a PT at 64 GiB: beyond 64 MiB of memory
        Mmu mmu = uncached(pt);
        assertEquals(Fault.MACHINE_CHECK, mmu.translate(VA, Access.READ, t));
        assertEquals(0x10_0000_0000L + Pte.index(VA, 1) * 8L, t.faultAddress);
    }

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void concurrentWalkersAndGuestCasLoseNoUpdate() throws Exception {
        // Four walkers set A/D by CAS in one page table while the "guest" flips a software-available bit in the
        // same entries by CAS. A plain store on either side would lose the other's update.
        PageTables pt = m.tables(4);
        int pages = 512;
        long[] leaves = new long[pages];
        for (int i = 0; i < pages; i++) {
            leaves[i] = pt.map(VA + ((long) i << 12) - (VA & 0x1FF000L), PA, Pte.SHIFT_4K, Pte.P | Pte.RW);
        }
        long base = VA - (VA & 0x1FF000L);
        int walkers = 3;
        int rounds = 4000;
        ExecutorService pool = Executors.newFixedThreadPool(walkers + 1);
        CountDownLatch start = new CountDownLatch(1);
        List<Future<?>> futures = new ArrayList<>();
        for (int w = 0; w < walkers; w++) {
            int seed = w;
            futures.add(pool.submit(() -> {
                Mmu mmu = uncached(pt);
                Translation tr = new Translation();
                Random r = new Random(seed);
                start.await();
                for (int i = 0; i < rounds; i++) {
                    int page = r.nextInt(pages);
                    if (mmu.translate(base + ((long) page << 12), r.nextBoolean() ? Access.WRITE : Access.READ, tr) != Fault.NONE) {
                        throw new AssertionError(tr.toString());
                    }
                    if (i % 64 == 0) { // the guest clears A/D now and then (by CAS): the next walk must set them again
                        long addr = leaves[page];
                        long e;
                        do {
                            e = pt.read(addr);
                        } while (!m.memory.compareAndSetLong(addr, e, e & ~(Pte.A | Pte.D)));
                    }
                }
                return null;
            }));
        }
        int flips = 20_000;
        futures.add(pool.submit(() -> {
            Random r = new Random(99);
            start.await();
            for (int i = 0; i < flips; i++) {
                long addr = leaves[r.nextInt(pages)];
                long e;
                do {
                    e = pt.read(addr);
                } while (!m.memory.compareAndSetLong(addr, e, e + (1L << 52))); // counter in ignored bits 62:52
            }
            return null;
        }));
        start.countDown();
        for (Future<?> f : futures) {
            f.get(50, TimeUnit.SECONDS);
        }
        pool.shutdown();
        long counted = 0;
        for (long leaf : leaves) {
            counted += (pt.read(leaf) >>> 52) & 0x7FF;
        }
        assertEquals(flips, counted, "no guest update lost to a walker's A/D write");
        // after all the clearing, one more write walk per page leaves A and D set on every page
        Mmu mmu = uncached(pt);
        for (int i = 0; i < pages; i++) {
            assertEquals(Fault.NONE, mmu.translate(base + ((long) i << 12), Access.WRITE, t));
            assertEquals(Pte.A | Pte.D, pt.read(leaves[i]) & (Pte.A | Pte.D));
        }
    }
}
