package io.vmpage.mmu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Seeded randomized differential test: random page-table mutations, each followed by the invalidation
 * an OS (or, for EPT, a hypervisor) would issue; after every step a translation through the TLB and
 * caches must equal an uncached walk of the tables in memory — same fault, error code, qualification,
 * host-physical address. Two address spaces with PCIDs share a kernel half with global pages, as Linux
 * lays them out; a space whose tables changed while it was not running is reloaded without the
 * no-flush bit (Linux's deferred flush), and switching otherwise keeps its entries.
 */
class TlbDifferentialTest {
    private static final int STEPS = 30_000;
    private static final long USER_BASE = 0x0000_0040_0000_0000L;
    private static final long KERNEL_BASE = 0xFFFF_8880_0000_0000L;
    private static final int SMALL_PAGES = 32;   // 4 KiB slots in each region
    private static final int LARGE_SLOTS = 4;    // 2 MiB slots toggled between a large page and a table
    private static final int LARGE_PAGES = 32;   // 4 KiB pages used in each 2 MiB slot

    @ParameterizedTest(name = "seed {0}, nested {1}")
    @CsvSource({"1, false", "2, false", "3, true", "4, true"})
    void cachedTranslationsMatchUncachedWalks(long seed, boolean nested) {
        try (Machine m = new Machine()) {
            new Run(m, new Random(seed), nested).go();
        }
    }

    private static final class Run {
        final Machine m;
        final Random r;
        final boolean nested;
        final PageTables[] spaces = new PageTables[2];
        final boolean[] needsFlush = new boolean[2];
        final PageTables ept;
        final Mmu mmu;
        final Translation cached = new Translation();
        final Translation reference = new Translation();
        int current;
        long eptp;
        int checks;
        int faults;

        Run(Machine m, Random r, boolean nested) {
            this.m = m;
            this.r = r;
            this.nested = nested;
            for (int i = 0; i < 2; i++) {
                spaces[i] = nested ? m.guestTables(4) : m.tables(4);
            }
            // a shared kernel half: space 1's PML4E for the kernel region points at space 0's PDPT
            spaces[0].map(KERNEL_BASE, dataFrame(), Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.G);
            long kernelPml4e = spaces[0].read(spaces[0].entryAddress(KERNEL_BASE, Pte.LEVEL_PML4));
            // Copied with A already set: a global TLB entry filled in space 0 serves space 1 without walking
            // space 1's copy, so a walk that would have to set A there (and could fault doing so when EPT
            // write-protects that table) would legitimately differ from the TLB. Linux's copies are
            // likewise already accessed.
            spaces[1].write(spaces[1].entryAddress(KERNEL_BASE, Pte.LEVEL_PML4), kernelPml4e | Pte.A);
            ept = nested ? m.ept(4) : null;
            for (int i = 0; i < SMALL_PAGES; i++) { // start populated: most checks translate, some fault
                for (PageTables pt : spaces) {
                    pt.map(USER_BASE + ((long) i << 12), dataFrame(), Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.US);
                }
                spaces[0].map(KERNEL_BASE + ((long) i << 12), dataFrame(), Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.G);
            }
            MmuConfig config = MmuConfig.defaults().withTlbGeometry(32, 4, 2, 2); // small: evictions happen
            mmu = nested ? m.nestedMmu(config, spaces[0], ept, r.nextBoolean()) : m.mmu(config, spaces[0]);
            eptp = mmu.eptp();
            mmu.setCr4(mmu.registers().cr4() | ControlRegisters.CR4_PCIDE | ControlRegisters.CR4_PGE);
            mmu.movToCr3(spaces[0].root() | 1);
        }

        /** A data frame: host-physical without EPT, guest-physical below the guest's table area with it. */
        long dataFrame() {
            long limit = nested ? 8 * Machine.MIB : 16 * Machine.MIB;
            return (long) r.nextInt((int) (limit >>> 12)) << 12;
        }

        long randomVa() {
            int pick = r.nextInt(10);
            long base = pick < 4 ? USER_BASE : pick < 7 ? KERNEL_BASE : USER_BASE + (1L << 30);
            if (pick >= 7) { // the 2 MiB region
                return base + ((long) r.nextInt(LARGE_SLOTS) << 21) + ((long) r.nextInt(LARGE_PAGES) << 12) + r.nextInt(4096);
            }
            return base + ((long) r.nextInt(SMALL_PAGES) << 12) + r.nextInt(4096);
        }

        long randomLeafFlags(boolean kernel) {
            long f = Pte.P;
            if (r.nextInt(8) == 0) {
                f = 0;
            }
            f |= r.nextInt(4) != 0 ? Pte.RW : 0;
            f |= !kernel && r.nextInt(4) != 0 ? Pte.US : 0;
            f |= r.nextInt(6) == 0 ? Pte.NX : 0;
            f |= kernel && r.nextBoolean() ? Pte.G : 0;
            f |= r.nextInt(3) == 0 ? Pte.A | Pte.D : 0;
            return f;
        }

        void go() {
            for (int step = 0; step < STEPS; step++) {
                int op = r.nextInt(100);
                if (op < 76) {
                    check();
                } else if (op < 88) {
                    mutateSmallPage();
                } else if (op < 91) {
                    toggleLargeSlot();
                } else if (op < 99) {
                    switchSpace();
                } else if (nested) {
                    mutateEpt();
                } else {
                    check();
                }
            }
            assertTrue(checks > STEPS / 2, "checks ran: " + checks);
            assertTrue(faults > 0 && faults < checks, "both outcomes exercised: " + faults + " faults of " + checks);
            assertTrue(mmu.stats().tlbHits() > checks / 40, "the TLB served translations: " + mmu.stats());
        }

        void check() {
            long va = randomVa();
            int access = r.nextInt(5) == 0 ? Access.FETCH : r.nextBoolean() ? Access.WRITE : Access.READ;
            access |= r.nextInt(3) == 0 ? Access.USER : 0;
            int got = mmu.translate(va, access, cached);
            int want = mmu.walkUncached(va, access, reference);
            String what = Access.describe(access) + " " + MachineMemory.hex(va) + " after " + checks + " checks: cached "
                + cached + " vs walk " + reference;
            assertEquals(want, got, what);
            if (got == Fault.NONE) {
                assertEquals(reference.hpa, cached.hpa, what);
            } else {
                faults++;
                assertEquals(reference.errorCode, cached.errorCode, what);
                assertEquals(reference.qualification, cached.qualification, what);
                assertEquals(reference.faultAddress, cached.faultAddress, what);
            }
            checks++;
        }

        void mutateSmallPage() {
            boolean kernel = r.nextInt(3) == 0;
            long va = (kernel ? KERNEL_BASE : USER_BASE) + ((long) r.nextInt(SMALL_PAGES) << 12);
            int space = kernel ? 0 : r.nextInt(2);
            PageTables pt = spaces[space];
            if (r.nextInt(5) == 0) {
                pt.unmap(va);
            } else {
                pt.map(va, dataFrame(), Pte.SHIFT_4K, randomLeafFlags(kernel));
            }
            invalidateAfterChange(va, kernel ? -1 : space);
        }

        /** Replace a 2 MiB slot's PDE: a large page, or a fresh page table of 4 KiB pages. */
        void toggleLargeSlot() {
            int space = r.nextInt(2);
            PageTables pt = spaces[space];
            long va = USER_BASE + (1L << 30) + ((long) r.nextInt(LARGE_SLOTS) << 21);
            long pdeAddr = pt.entryAddress(va, Pte.LEVEL_PD);
            if (pdeAddr < 0) {
                pt.map(va, 0, Pte.SHIFT_4K, 0); // build the path down to the PD
                pdeAddr = pt.entryAddress(va, Pte.LEVEL_PD);
            }
            if (r.nextBoolean()) {
                long frame2m = (long) r.nextInt(nested ? 4 : 8) << 21;
                pt.write(pdeAddr, Pte.entry(frame2m, randomLeafFlags(false) | Pte.PS));
            } else {
                pt.write(pdeAddr, 0);
                for (int i = 0; i < LARGE_PAGES; i++) {
                    pt.map(va + ((long) i << 12), dataFrame(), Pte.SHIFT_4K, randomLeafFlags(false));
                }
            }
            // changing a PDE's kind affects up to 512 pages: the OS flushes the whole address space
            if (space == current) {
                mmu.movToCr3(spaces[space].root() | (space + 1));
            } else {
                needsFlush[space] = true;
            }
        }

        void invalidateAfterChange(long va, int space) {
            if (space < 0) { // kernel: shared by both spaces
                mmu.invlpg(va);
                needsFlush[1 - current] = true;
            } else if (space == current) {
                mmu.invlpg(va);
            } else {
                needsFlush[space] = true;
            }
        }

        void switchSpace() {
            int next = 1 - current;
            long cr3 = spaces[next].root() | (next + 1);
            mmu.movToCr3(needsFlush[next] ? cr3 : cr3 | ControlRegisters.CR3_NO_FLUSH);
            needsFlush[next] = false;
            current = next;
        }

        /** The hypervisor remaps or re-protects one guest frame, then INVEPTs. */
        void mutateEpt() {
            if (r.nextInt(4) == 0) { // write-protect or re-open one of the guest's page-table pages
                long gpa = 8 * Machine.MIB + ((long) r.nextInt(32) << 12);
                ept.write(ept.entryAddress(gpa, Pte.LEVEL_PT), Ept.entry(Machine.GUEST_BASE + gpa,
                    (r.nextInt(10) == 0 ? Ept.R : Ept.RWX) | Ept.MEMORY_TYPE_WB));
            } else {
                long gpa = dataFrame();
                long[] perms = {0, Ept.R, Ept.R | Ept.W, Ept.R | Ept.X, Ept.RWX, Ept.X};
                long host = r.nextBoolean() ? Machine.GUEST_BASE + gpa : 48 * Machine.MIB + ((long) r.nextInt(4096) << 12);
                ept.write(ept.entryAddress(gpa, Pte.LEVEL_PT), Ept.entry(host, perms[r.nextInt(perms.length)] | Ept.MEMORY_TYPE_WB));
            }
            mmu.invept(eptp);
        }
    }
}
