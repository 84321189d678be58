package io.vmpage.bench.jmh;

import io.vmpage.bench.cli.Units;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.NativeRegion;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.agrona.UnsafeApi;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * Single 8-byte accesses to {@link MachineMemory} at random aligned addresses, against the same access
 * through raw {@code Unsafe} on a {@link NativeRegion} of the same size (the same kind of pages).
 * {@code region=cached} (32 KiB, 4096 addresses) stays in L1/L2 and exposes the accessor overhead (bounds
 * and alignment check); {@code region=1g} cycles through 2^20 addresses (64 MiB of cache lines, twice the
 * last-level cache), so most accesses miss and the overhead should vanish into memory latency. Both
 * regions are touched page by page in setup, so no benchmark measures first-touch page faults.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class MachineMemoryBench {
    private static final long SEED = 0x5EED_F00DL;
    private static final long CACHED_BYTES = 32 * 1024;
    private static final int CACHED_SLOTS = 1 << 12;
    private static final int MEMORY_SLOTS = 1 << 20;

    /** Region size: {@code cached} (32 KiB) or a size such as {@code 1g}. */
    @Param({"cached", "1g"})
    public String region;

    private MachineMemory memory;
    private NativeRegion raw;
    private long rawAddress;
    /** Random 8-byte word indexes into the region (offset = index * 8), used cyclically. */
    private int[] words;
    private int slotMask;
    private int cursor;

    @Setup(Level.Trial)
    public void setUp() {
        boolean cached = "cached".equals(region);
        long bytes = cached ? CACHED_BYTES : Units.parseSize(region);
        memory = MachineMemory.allocate(bytes);
        raw = NativeRegion.allocate(bytes);
        rawAddress = raw.address();
        for (long pa = 0; pa < bytes; pa += MachineMemory.FRAME_SIZE) {
            memory.putLong(pa, 0L);
            UnsafeApi.putLong(null, rawAddress + pa, 0L);
        }
        int slots = cached ? CACHED_SLOTS : MEMORY_SLOTS;
        SplittableRandom random = new SplittableRandom(SEED);
        words = new int[slots];
        for (int i = 0; i < slots; i++) {
            words[i] = (int) random.nextLong(bytes >>> 3);
        }
        slotMask = slots - 1;
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        memory.close();
        raw.free();
    }

    private long nextOffset() {
        return (long) words[cursor++ & slotMask] << 3;
    }

    @Benchmark
    public long rawRead() {
        return UnsafeApi.getLong(null, rawAddress + nextOffset());
    }

    @Benchmark
    @Baseline("rawRead")
    public long read() {
        return memory.getLong(nextOffset());
    }

    @Benchmark
    @Baseline("rawRead")
    public long readUnchecked() {
        return memory.getLongUnchecked(nextOffset());
    }

    @Benchmark
    public void rawWrite() {
        UnsafeApi.putLong(null, rawAddress + nextOffset(), cursor);
    }

    @Benchmark
    @Baseline("rawWrite")
    public void write() {
        memory.putLong(nextOffset(), cursor);
    }

    /** CAS of 0 to 0: always succeeds (memory stays zero) and still takes the line exclusively. */
    @Benchmark
    public boolean rawCas() {
        return UnsafeApi.compareAndSetLong(null, rawAddress + nextOffset(), 0L, 0L);
    }

    @Benchmark
    @Baseline("rawCas")
    public boolean cas() {
        return memory.compareAndSetLong(nextOffset(), 0L, 0L);
    }
}
