package io.vmpage.bench.jmh;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.mmu.Access;
import io.vmpage.mmu.MmuStats;
import io.vmpage.mmu.Pte;
import java.util.Arrays;
import java.util.function.ToLongFunction;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Each TranslationBench benchmark measures what it claims (states set up and operations invoked outside
 * JMH): the right data comes back, the same as the raw baseline reads at the same cursor, and the Mmu
 * statistics show the TLB hits, the walk lengths and the cache hits the benchmark's name promises.
 */
class TranslationBenchTest {
    private TranslationBench bench;

    @BeforeEach
    void setUp() {
        bench = new TranslationBench();
        bench.setUp();
    }

    @AfterEach
    void tearDown() {
        bench.tearDown();
    }

    @Test
    void workingSetsHaveTheirSizes() {
        assertEquals(TranslationBench.SMALL_PAGES, Arrays.stream(TranslationBench.SMALL_PAGE_NUMBERS).distinct().count());
        assertTrue(Arrays.stream(TranslationBench.SMALL_WORDS).allMatch(w -> contains(TranslationBench.SMALL_PAGE_NUMBERS, w >>> 9)));
        assertTrue(Arrays.stream(TranslationBench.WARM_WORDS).allMatch(w -> w >>> 9 < TranslationBench.WARM_PAGES));
        assertTrue(Arrays.stream(TranslationBench.COLD_WORDS).allMatch(w -> w >= 0 && w < TranslationBench.DATA_BYTES >>> 3));
        assertTrue(Arrays.stream(TranslationBench.COLD_WORDS).map(w -> w >>> 9).distinct().count()
            == TranslationBench.DATA_PAGES, "the cold offsets cover every page");
    }

    @Test
    void tlbHitReadHitsTheTlbOnEveryTranslation() {
        TranslationBench.TlbHit g = new TranslationBench.TlbHit();
        g.setUp();
        try {
            long firstVa = TranslationBench.VA_BASE + ((long) TranslationBench.SMALL_WORDS[0] << 3);
            assertEquals(g.dataHpa + ((long) TranslationBench.SMALL_WORDS[0] << 3), g.mmu.translate(firstVa, Access.READ));
            g.mmu.stats().reset();
            int ops = TranslationBench.SMALL_SLOTS;
            checkReads(ops, TranslationBench.SMALL_WORDS, TranslationBench::rawReadSmall, b -> b.tlbHitRead(g));
            MmuStats s = g.mmu.stats();
            assertEquals(ops, s.translations());
            assertEquals(ops, s.tlbHits());
            assertEquals(0, s.walks());

            TranslationBench b = new TranslationBench();
            for (int i = 0; i < ops; i++) {
                assertEquals(g.dataHpa + ((long) TranslationBench.SMALL_WORDS[i] << 3), b.tlbHitOnly(g), "tlbHitOnly " + i);
            }
            assertEquals(2L * ops, s.tlbHits(), "tlbHitOnly hits the TLB too");
            assertEquals(0, s.walks());
        } finally {
            g.tearDown();
        }
    }

    @Test
    void cold4LevelWalkMakesFourReferencesPerTranslation() {
        TranslationBench.Cold1D g = new TranslationBench.Cold1D();
        g.setUp();
        try {
            assertAccessedBitsSet(g);
            int ops = 20_000;
            checkReads(ops, TranslationBench.COLD_WORDS, TranslationBench::rawRead, b -> b.cold4LevelWalk(g));
            MmuStats s = g.mmu.stats();
            assertEquals(ops, s.walks());
            assertEquals(4L * ops, s.walkRefs());
            assertEquals(0, s.tlbHits() + s.pscHits() + s.nestedHits());
        } finally {
            g.tearDown();
        }
    }

    @Test
    void cold2DWalkMakesTwentyFourReferencesPerTranslation() {
        TranslationBench.Cold2D g = new TranslationBench.Cold2D();
        g.setUp();
        try {
            assertAccessedBitsSet(g);
            assertNotEquals(0, g.mmu.eptp(), "nested mode");
            int ops = 20_000;
            checkReads(ops, TranslationBench.COLD_WORDS, TranslationBench::rawRead, b -> b.cold2DWalk(g));
            MmuStats s = g.mmu.stats();
            assertEquals(ops, s.walks());
            assertEquals(24L * ops, s.walkRefs());
            assertEquals(0, s.tlbHits() + s.pscHits() + s.nestedHits());
        } finally {
            g.tearDown();
        }
    }

    @Test
    void warm1DWalkReadsOnlyThePte() {
        TranslationBench.Warm1D g = new TranslationBench.Warm1D();
        g.setUp();
        try {
            int ops = TranslationBench.WARM_SLOTS;
            checkReads(ops, TranslationBench.WARM_WORDS, TranslationBench::rawReadWarm, b -> b.warm1DWalk(g));
            MmuStats s = g.mmu.stats();
            assertEquals(ops, s.walks());
            assertEquals(ops, s.pscHits());
            assertEquals(0, s.pscMisses());
            assertEquals(1.0, s.refsPerWalk());
        } finally {
            g.tearDown();
        }
    }

    @Test
    void warm2DWalkReadsOnlyThePteAndHitsTheNestedCache() {
        TranslationBench.Warm2D g = new TranslationBench.Warm2D();
        g.setUp();
        try {
            assertNotEquals(0, g.mmu.eptp(), "nested mode");
            int ops = TranslationBench.WARM_SLOTS;
            checkReads(ops, TranslationBench.WARM_WORDS, TranslationBench::rawReadWarm, b -> b.warm2DWalk(g));
            MmuStats s = g.mmu.stats();
            assertEquals(ops, s.walks());
            assertEquals(0, s.tlbHits(), "TLB off");
            assertEquals(ops, s.pscHits());
            assertEquals(0, s.pscMisses());
            assertEquals(ops, s.nestedHits(), "the data frame's EPT translation comes from the nested cache");
            assertEquals(0, s.nestedMisses());
            assertEquals(1.0, s.refsPerWalk());
        } finally {
            g.tearDown();
        }
    }

    /**
     * Runs {@code ops} operations of the benchmark and of its raw baseline at the same cursors: both
     * return the word stored at the slot's offset.
     */
    private void checkReads(int ops, int[] words, ToLongFunction<TranslationBench> baseline,
                            ToLongFunction<TranslationBench> benchmark) {
        for (int i = 0; i < ops; i++) {
            long expected = TranslationBench.word((long) words[i & (words.length - 1)] << 3);
            bench.cursor = i;
            assertEquals(expected, baseline.applyAsLong(bench), "baseline at slot " + i);
            bench.cursor = i;
            long got = benchmark.applyAsLong(bench);
            if (got != expected) {
                assertEquals(expected, got, "benchmark at slot " + i);
            }
        }
    }

    /** Every paging-structure entry on the path of a sample of data pages has A (and leaves D) set. */
    private static void assertAccessedBitsSet(TranslationBench.Guest g) {
        for (int page = 0; page < TranslationBench.DATA_PAGES; page += 97) {
            long va = TranslationBench.VA_BASE + ((long) page << Pte.SHIFT_4K);
            for (int level = Pte.LEVEL_PML4; level >= Pte.LEVEL_PT; level--) {
                long e = g.tables.read(g.tables.entryAddress(va, level));
                long need = level == Pte.LEVEL_PT ? Pte.A | Pte.D : Pte.A;
                assertEquals(need, e & need, "level " + level + " entry of page " + page);
            }
        }
    }

    private static boolean contains(int[] values, int value) {
        return Arrays.stream(values).anyMatch(v -> v == value);
    }
}
