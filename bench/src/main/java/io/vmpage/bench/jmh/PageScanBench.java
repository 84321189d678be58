package io.vmpage.bench.jmh;

import io.vmpage.migration.PageScan;
import io.vmpage.migration.Xbzrle;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.agrona.UnsafeApi;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;

/**
 * What a migration does to each page before it sends it, per page on one core, over 4096 pages (16 MiB,
 * cycled, more than the L2): {@code zeroPage} scans a zero page whole (the worst case: every byte must
 * be read) against {@code rawScan}, a plain sum of the same page's 512 words; {@code xbzrleEncode} takes
 * the XBZRLE delta of a page against its previous copy where 16 scattered words changed (a re-sent page
 * of a guest that writes words) against {@code rawScan2}, a sum of both pages' words, since the encoder
 * must read both. Pages are in heap arrays, as the source keeps them (the XBZRLE cache is one).
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class PageScanBench {
    private static final int PAGES = 4096;
    private static final int PAGE = PageScan.PAGE;
    private static final long BASE = UnsafeApi.arrayBaseOffset(byte[].class);

    private byte[] zeros;
    private byte[] old;
    private byte[] changed;
    private byte[] delta;
    private int cursor;

    @Setup(Level.Trial)
    public void setUp() {
        zeros = new byte[PAGES * PAGE];
        old = new byte[PAGES * PAGE];
        changed = new byte[PAGES * PAGE];
        delta = new byte[PAGE];
        SplittableRandom random = new SplittableRandom(0x5CA9);
        random.nextBytes(old);
        System.arraycopy(old, 0, changed, 0, old.length);
        for (int p = 0; p < PAGES; p++) {
            for (int w = 0; w < 16; w++) {
                int at = p * PAGE + 8 * random.nextInt(PAGE / 8);
                changed[at] ^= 0x5A;
            }
        }
    }

    private int next() {
        return (cursor++ & (PAGES - 1)) * PAGE;
    }

    @Benchmark
    public long rawScan() {
        long at = BASE + next();
        long sum = 0;
        for (int i = 0; i < PAGE; i += 8) {
            sum += UnsafeApi.getLong(zeros, at + i);
        }
        return sum;
    }

    @Benchmark
    @Baseline("rawScan")
    public boolean zeroPage() {
        return PageScan.isZero(zeros, next());
    }

    @Benchmark
    public long rawScan2() {
        long at = BASE + next();
        long sum = 0;
        for (int i = 0; i < PAGE; i += 8) {
            sum += UnsafeApi.getLong(old, at + i) ^ UnsafeApi.getLong(changed, at + i);
        }
        return sum;
    }

    @Benchmark
    @Baseline("rawScan2")
    public int xbzrleEncode() {
        int at = next();
        return Xbzrle.encode(old, at, changed, at, delta, PAGE - 3);
    }
}
