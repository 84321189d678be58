package io.vmpage.bench.jmh;

import io.vmpage.mmu.Access;
import io.vmpage.mmu.Ept;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Mmu;
import io.vmpage.mmu.MmuConfig;
import io.vmpage.mmu.MmuStats;
import io.vmpage.mmu.NativeRegion;
import io.vmpage.mmu.PageTables;
import io.vmpage.mmu.Pte;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.function.LongSupplier;
import org.agrona.UnsafeApi;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * One address translation through {@link Mmu#translate} followed by the 8-byte read of the data it
 * translates to, for each state of the translation caches, against a raw {@code Unsafe} read of a
 * {@link NativeRegion} at the same offsets (so both read the same number of distinct cache lines).
 *
 * <p>Every benchmark uses a 64 MiB data area mapped with 4 KiB pages at {@link #VA_BASE}, either 1D
 * (4-level tables addressed host-physically) or 2D (4-level guest tables in guest-physical memory under a
 * 4-level EPT with 4 KiB pages). Three working sets, each with its own raw baseline:
 * <ul>
 * <li>{@code small} (baseline {@code rawReadSmall}): 64 random pages of the area, far fewer than the
 *     default TLB's 1536 4 KiB entries: {@code tlbHitRead} always hits the TLB.</li>
 * <li>{@code warm} (baseline {@code rawReadWarm}): the first 2 MiB of the area, the 512 pages one guest
 *     page table maps: with the TLB off, the PDE cache holds the one PDE and the nested cache the 512
 *     data frames, so a walk reads only the guest PTE (1 reference), 1D or 2D.</li>
 * <li>{@code cold} (baseline {@code rawRead}): all 64 MiB, 2^20 random offsets cycled (about 40 MiB of
 *     distinct lines, more than a 32 MiB last-level cache), through an Mmu without TLB, paging-structure
 *     cache or nested cache: every translation is a full walk, 4 references 1D, 24 references 2D.</li>
 * </ul>
 * A/D bits are set before measuring (leaves are mapped with A and D, A is set in the upper levels by
 * table edits in setup, EPT A/D is off), so no measured walk does a CAS. Every page of both regions is
 * written in setup, so no benchmark measures first-touch page faults. Each word of the data holds
 * {@link #word} of its offset, so a test can check that a translation read the right data.
 *
 * <p>Reading the ratios: the raw reads are independent of each other, so the core overlaps their cache
 * misses and a raw read costs its throughput, not its latency (about 14 ns over 64 MiB where one miss
 * takes about 165 ns on the 2-core EPYC VM this was written on). A translated read issues its data load
 * only at the end of a walk of tens to hundreds of instructions, so far fewer misses overlap: the ratio
 * is the cost of the translation code plus the latency the walk no longer hides.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class TranslationBench {
    static final long DATA_BYTES = 64L << 20;
    static final int DATA_PAGES = (int) (DATA_BYTES >>> Pte.SHIFT_4K);
    /** Guest linear address of data offset 0: 512 GiB aligned, so the area sits under one PD. */
    static final long VA_BASE = 0x0000_7F00_0000_0000L;
    static final int SMALL_PAGES = 64;
    static final int WARM_PAGES = 512;
    /** Room for the guest page tables (35 tables for 64 MiB of 4 KiB pages). */
    static final long TABLE_BYTES = 1L << 20;
    /** Room for the EPT tables (36 tables), below the guest's RAM in the 2D layout. */
    static final long EPT_BYTES = 2L << 20;

    private static final int WORDS_PER_PAGE = MachineMemory.FRAME_SIZE / 8;
    private static final long DATA_TAG = 0xDA7A_0000_0000_0000L;
    private static final long SEED = 0x7A4B_1E55L;

    static final int COLD_SLOTS = 1 << 20;
    static final int WARM_SLOTS = 1 << 16;
    static final int SMALL_SLOTS = 1 << 12;

    /** The 64 distinct pages (numbers within the data area) of the small working set. */
    static final int[] SMALL_PAGE_NUMBERS;
    /** Word indexes (offset = index * 8) into the data area, per working set, used cyclically. */
    static final int[] SMALL_WORDS;
    static final int[] WARM_WORDS;
    static final int[] COLD_WORDS;

    static {
        SplittableRandom random = new SplittableRandom(SEED);
        SMALL_PAGE_NUMBERS = random.ints(0, DATA_PAGES).distinct().limit(SMALL_PAGES).toArray();
        SMALL_WORDS = new int[SMALL_SLOTS];
        for (int i = 0; i < SMALL_SLOTS; i++) {
            SMALL_WORDS[i] = SMALL_PAGE_NUMBERS[random.nextInt(SMALL_PAGES)] * WORDS_PER_PAGE
                + random.nextInt(WORDS_PER_PAGE);
        }
        WARM_WORDS = random.ints(WARM_SLOTS, 0, WARM_PAGES * WORDS_PER_PAGE).toArray();
        COLD_WORDS = random.ints(COLD_SLOTS, 0, DATA_PAGES * WORDS_PER_PAGE).toArray();
    }

    private NativeRegion raw;
    private long rawAddress;
    /** Shared by every benchmark; each benchmark runs in its own fork. */
    int cursor;

    /** The value stored at data offset {@code offset}, in the raw region and in every data area. */
    static long word(long offset) {
        return DATA_TAG | offset;
    }

    @Setup(Level.Trial)
    public void setUp() {
        raw = NativeRegion.allocate(DATA_BYTES);
        rawAddress = raw.address();
        for (long offset = 0; offset < DATA_BYTES; offset += 8) {
            UnsafeApi.putLong(null, rawAddress + offset, word(offset));
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        raw.free();
    }

    private long nextSmall() {
        return (long) SMALL_WORDS[cursor++ & (SMALL_SLOTS - 1)] << 3;
    }

    private long nextWarm() {
        return (long) WARM_WORDS[cursor++ & (WARM_SLOTS - 1)] << 3;
    }

    private long nextCold() {
        return (long) COLD_WORDS[cursor++ & (COLD_SLOTS - 1)] << 3;
    }

    // ------------------------------------------------------------------ raw baselines

    /** Raw read at random over all 64 MiB (the cold working set). */
    @Benchmark
    public long rawRead() {
        return UnsafeApi.getLong(null, rawAddress + nextCold());
    }

    /** Raw read at random over the 64 pages of the small working set. */
    @Benchmark
    public long rawReadSmall() {
        return UnsafeApi.getLong(null, rawAddress + nextSmall());
    }

    /** Raw read at random over the first 2 MiB (the warm working set). */
    @Benchmark
    public long rawReadWarm() {
        return UnsafeApi.getLong(null, rawAddress + nextWarm());
    }

    // ------------------------------------------------------------------ translations

    /** 1D, default Mmu: every translation is a TLB hit (64 pages in a 1536-entry TLB, filled in setup). */
    @Benchmark
    @Baseline("rawReadSmall")
    public long tlbHitRead(TlbHit g) {
        return g.memory.getLongUnchecked(g.mmu.translate(VA_BASE + nextSmall(), Access.READ));
    }

    /**
     * {@link #tlbHitRead} without the read: the translation alone, so the TLB's share of
     * {@code tlbHitRead} can be told from the read's. Returns the host-physical address.
     */
    @Benchmark
    @Baseline("rawReadSmall")
    public long tlbHitOnly(TlbHit g) {
        return g.mmu.translate(VA_BASE + nextSmall(), Access.READ);
    }

    /** 1D, no TLB, no caches: a 4-reference walk per translation, at random over 64 MiB. */
    @Benchmark
    @Baseline("rawRead")
    public long cold4LevelWalk(Cold1D g) {
        return g.memory.getLongUnchecked(g.mmu.translate(VA_BASE + nextCold(), Access.READ));
    }

    /**
     * 1D, TLB off, paging-structure cache on: warm is the PDE cache entry of the one page table that maps
     * the working set, so each walk starts at that table and reads only the PTE (1 reference).
     */
    @Benchmark
    @Baseline("rawReadWarm")
    public long warm1DWalk(Warm1D g) {
        return g.memory.getLongUnchecked(g.mmu.translate(VA_BASE + nextWarm(), Access.READ));
    }

    /** 2D (4-level guest over 4-level EPT), no TLB, no caches: the 24-reference walk, at random over 64 MiB. */
    @Benchmark
    @Baseline("rawRead")
    public long cold2DWalk(Cold2D g) {
        return g.memory.getLongUnchecked(g.mmu.translate(VA_BASE + nextCold(), Access.READ));
    }

    /**
     * 2D, TLB off, paging-structure cache (32 per level) and nested cache on. Warm: the PDE cache entry
     * of the one guest page table mapping the working set (it holds the table's host-physical address,
     * so the PTE read needs no EPT walk), and the nested cache's guest-physical to host-physical entries
     * for the 512 data frames (so the final EPT translation reads nothing). One reference per walk,
     * where the cold 2D walk makes 24.
     */
    @Benchmark
    @Baseline("rawReadWarm")
    public long warm2DWalk(Warm2D g) {
        return g.memory.getLongUnchecked(g.mmu.translate(VA_BASE + nextWarm(), Access.READ));
    }

    // ------------------------------------------------------------------ states

    /**
     * Machine memory with the 64 MiB data area mapped at {@link #VA_BASE} and one {@link Mmu} translating
     * it. 1D layout (host-physical): data at [0, 64 MiB), page tables at [64, 65 MiB). 2D layout: EPT
     * tables at host [0, 2 MiB), the guest's RAM (guest-physical [0, 65 MiB): data, then the guest's
     * page tables) at host [2, 67 MiB) under a 4 KiB EPT.
     */
    public abstract static class Guest {
        MachineMemory memory;
        /** The guest page tables (guest-physical table addresses in 2D). */
        PageTables tables;
        /** The EPT in 2D, else null. */
        PageTables ept;
        Mmu mmu;
        /** Host-physical address of data offset 0. */
        long dataHpa;

        /** Builds memory, tables (A and D set on every data page's path) and an Mmu with {@code config}. */
        final void build(boolean nested, MmuConfig config) {
            LongSupplier tableFrames;
            if (nested) {
                long guestBytes = DATA_BYTES + TABLE_BYTES;
                memory = MachineMemory.allocate(EPT_BYTES + guestBytes);
                dataHpa = EPT_BYTES;
                ept = new PageTables(memory, PageTables.Format.EPT, 4, PageTables.bumpAllocator(memory, 0, EPT_BYTES));
                for (long gpa = 0; gpa < guestBytes; gpa += MachineMemory.FRAME_SIZE) {
                    ept.map(gpa, dataHpa + gpa, Pte.SHIFT_4K, Ept.RWX | Ept.MEMORY_TYPE_WB);
                }
                long[] next = {DATA_BYTES};
                tableFrames = () -> {
                    if (next[0] + MachineMemory.FRAME_SIZE > guestBytes) {
                        throw new IllegalStateException("guest page-table frames exhausted");
                    }
                    long gpa = next[0];
                    next[0] += MachineMemory.FRAME_SIZE;
                    return gpa; // fresh memory: already zero
                };
                long guestBase = dataHpa;
                tables = new PageTables(memory, PageTables.Format.X86, 4, tableFrames, gpa -> gpa + guestBase);
            } else {
                memory = MachineMemory.allocate(DATA_BYTES + TABLE_BYTES);
                dataHpa = 0;
                tableFrames = PageTables.bumpAllocator(memory, DATA_BYTES, DATA_BYTES + TABLE_BYTES);
                tables = new PageTables(memory, PageTables.Format.X86, 4, tableFrames);
            }
            for (long offset = 0; offset < DATA_BYTES; offset += MachineMemory.FRAME_SIZE) {
                tables.map(VA_BASE + offset, offset, Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.A | Pte.D);
            }
            for (long offset = 0; offset < DATA_BYTES; offset += 8) {
                memory.putLongUnchecked(dataHpa + offset, word(offset));
            }
            setAccessedBits();
            mmu = new Mmu(memory, config);
            mmu.movToCr3(tables.root());
            mmu.enter(nested ? 1 : 0, nested ? Ept.eptp(ept.root(), 4, false) : 0);
        }

        /**
         * Sets A in the upper-level entries on every data page's path (the leaves were mapped with A and
         * D), by plain table edits rather than walks: a setup walk would run the walker's code under a
         * different cache configuration and skew the profile the JIT compiles the measured walks with.
         */
        private void setAccessedBits() {
            for (long offset = 0; offset < DATA_BYTES; offset += MachineMemory.FRAME_SIZE) {
                for (int level = Pte.LEVEL_PML4; level > Pte.LEVEL_PT; level--) {
                    long entry = tables.entryAddress(VA_BASE + offset, level);
                    long e = tables.read(entry);
                    if ((e & Pte.A) == 0) {
                        tables.write(entry, e | Pte.A);
                    }
                }
            }
        }

        /** Translates each page of {@code pages} (numbers within the data area) once, then zeroes the stats. */
        final void warm(int[] pages) {
            for (int page : pages) {
                mmu.translate(VA_BASE + ((long) page << Pte.SHIFT_4K), Access.READ);
            }
            mmu.stats().reset();
        }

        /** Frees the memory after printing what the measured translations did (to the fork's output). */
        final void close() {
            MmuStats s = mmu.stats();
            Class<?> state = getClass();
            while (state.getSuperclass() != Guest.class) { // JMH subclasses each state
                state = state.getSuperclass();
            }
            System.out.printf(Locale.ROOT, "%n%s: %d translations, TLB hit rate %.3f, %.2f refs per walk,"
                    + " PSC hits %d / misses %d, nested hits %d / misses %d, faults %d%n",
                state.getSimpleName(), s.translations(), s.tlbHitRate(), s.refsPerWalk(), s.pscHits(),
                s.pscMisses(), s.nestedHits(), s.nestedMisses(), s.faults());
            memory.close();
        }
    }

    /** 1D, default configuration (TLB, PSC, nested cache), TLB filled with the 64 small pages. */
    @State(Scope.Thread)
    public static class TlbHit extends Guest {
        @Setup(Level.Trial)
        public void setUp() {
            build(false, MmuConfig.defaults());
            warm(SMALL_PAGE_NUMBERS);
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            close();
        }
    }

    /** 1D, uncached. */
    @State(Scope.Thread)
    public static class Cold1D extends Guest {
        @Setup(Level.Trial)
        public void setUp() {
            build(false, MmuConfig.uncached());
            mmu.stats().reset();
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            close();
        }
    }

    /** 1D, TLB off, paging-structure cache on (32 entries per level), warm for the first 512 pages. */
    @State(Scope.Thread)
    public static class Warm1D extends Guest {
        @Setup(Level.Trial)
        public void setUp() {
            build(false, MmuConfig.uncached().withPagingStructureCache(32));
            warm(firstPages(WARM_PAGES));
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            close();
        }
    }

    /** 2D, uncached. */
    @State(Scope.Thread)
    public static class Cold2D extends Guest {
        @Setup(Level.Trial)
        public void setUp() {
            build(true, MmuConfig.uncached());
            mmu.stats().reset();
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            close();
        }
    }

    /**
     * 2D, TLB off, paging-structure cache on (32 entries per level) and a nested cache of 4096 entries
     * (1024 sets of 4 ways: room for the 512 data frames without set conflicts), warm for the first 512
     * pages.
     */
    @State(Scope.Thread)
    public static class Warm2D extends Guest {
        static final int NESTED_ENTRIES = 4096;

        @Setup(Level.Trial)
        public void setUp() {
            build(true, MmuConfig.uncached().withPagingStructureCache(32).withNestedCache(NESTED_ENTRIES));
            warm(firstPages(WARM_PAGES));
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            close();
        }
    }

    static int[] firstPages(int n) {
        int[] pages = new int[n];
        for (int i = 0; i < n; i++) {
            pages[i] = i;
        }
        return pages;
    }
}
