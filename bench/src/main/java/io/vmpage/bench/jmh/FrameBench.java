package io.vmpage.bench.jmh;

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
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * Whole-frame operations on random frames of a 256 MiB memory, against raw {@code Unsafe} on a
 * {@link NativeRegion} of the same size: {@code copyFrame} against a 4 KiB {@code copyMemory}, and the
 * frame scans ({@code frameHash}, and {@code isFrameZero} on zero frames, which must read all 4096 bytes)
 * against a plain sum of the frame's 512 words. The 16384 random source frames cycled through (and as many
 * destinations) touch about 56 MiB each, more than a 32 MiB last-level cache. Every page is touched in
 * setup, so no benchmark measures first-touch page faults.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class FrameBench {
    private static final long BYTES = 256L << 20;
    private static final int FRAMES = (int) (BYTES >>> MachineMemory.FRAME_SHIFT);
    private static final int SLOTS = 16384;
    private static final int SLOT_MASK = SLOTS - 1;
    private static final long SEED = 0xF4A3_E5L;

    private MachineMemory memory;
    private NativeRegion raw;
    private long rawAddress;
    /** Random source frames; {@code dst[i]} differs from {@code src[i]}. */
    private int[] src;
    private int[] dst;
    private int cursor;

    @Setup(Level.Trial)
    public void setUp() {
        memory = MachineMemory.allocate(BYTES);
        raw = NativeRegion.allocate(BYTES);
        rawAddress = raw.address();
        for (long pa = 0; pa < BYTES; pa += MachineMemory.FRAME_SIZE) {
            memory.putLong(pa, 0L);
            UnsafeApi.putLong(null, rawAddress + pa, 0L);
        }
        SplittableRandom random = new SplittableRandom(SEED);
        src = new int[SLOTS];
        dst = new int[SLOTS];
        for (int i = 0; i < SLOTS; i++) {
            src[i] = random.nextInt(FRAMES);
            dst[i] = (src[i] + 1 + random.nextInt(FRAMES - 1)) % FRAMES;
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        memory.close();
        raw.free();
    }

    private long rawFrame(int frame) {
        return rawAddress + ((long) frame << MachineMemory.FRAME_SHIFT);
    }

    @Benchmark
    public void rawCopy() {
        int i = cursor++ & SLOT_MASK;
        UnsafeApi.copyMemory(rawFrame(src[i]), rawFrame(dst[i]), MachineMemory.FRAME_SIZE);
    }

    @Benchmark
    @Baseline("rawCopy")
    public void copyFrame() {
        int i = cursor++ & SLOT_MASK;
        memory.copyFrame(src[i], dst[i]);
    }

    @Benchmark
    public long rawSum() {
        long address = rawFrame(src[cursor++ & SLOT_MASK]);
        long sum = 0;
        for (int offset = 0; offset < MachineMemory.FRAME_SIZE; offset += 8) {
            sum += UnsafeApi.getLong(null, address + offset);
        }
        return sum;
    }

    @Benchmark
    @Baseline("rawSum")
    public long frameHash() {
        return memory.frameHash(src[cursor++ & SLOT_MASK]);
    }

    @Benchmark
    @Baseline("rawSum")
    public boolean isFrameZero() {
        return memory.isFrameZero(src[cursor++ & SLOT_MASK]);
    }
}
