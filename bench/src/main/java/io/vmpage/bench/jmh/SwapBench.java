package io.vmpage.bench.jmh;

import io.vmpage.engine.Host;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.swap.SwapDevice;
import io.vmpage.mmu.MachineMemory;
import java.io.IOException;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OperationsPerInvocation;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * Host swap. {@code swapOutAndIn}: one page of a 16 MiB nested guest swapped out ({@code Vm.swapOut}:
 * unhook, flush, drain host accesses, write the slot, free the frame) and swapped back in by a host read
 * of it (the fetch-on-fault path: a fresh frame filled from the slot, the slot freed), cycling over 1024
 * pages. Baseline {@code rawWriteAndRead}: 4 KiB written into and read back from the same swap file (its
 * second half, which the swap-outs do not reach), memory-mapped, with nothing else done. The file stays in
 * the page cache: this is the engine's cost around the copy, not the disk's.
 *
 * <p>Each half apart, per page over all 1024 pages of a guest in one invocation ({@link Resident} and
 * {@link OnSwap} put the pages back where the next invocation needs them, outside the measurement):
 * {@code swapOut} against {@code rawWrite} (4 KiB into the mapped file), {@code swapIn} against
 * {@code rawRead} (4 KiB out of it).
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class SwapBench {
    private static final int PAGES = 1024;

    private Path dir;
    private Host host;
    private Vm vm;
    private int next;
    private FileChannel rawChannel;
    private MappedByteBuffer raw;
    private final byte[] page = new byte[MachineMemory.FRAME_SIZE];
    private final byte[] back = new byte[MachineMemory.FRAME_SIZE];

    @Setup(Level.Trial)
    public void setUp() throws IOException {
        dir = Files.createTempDirectory("vmpage-swapbench");
        host = hostWithSwap(dir);
        vm = writtenGuest(host, 0x5A);
        new SplittableRandom(0x5A).nextBytes(page);
        // the swap file itself, its second half (the swap-outs, one page at a time, take slots at the start)
        rawChannel = FileChannel.open(dir.resolve("swap"), StandardOpenOption.READ, StandardOpenOption.WRITE);
        raw = rawChannel.map(FileChannel.MapMode.READ_WRITE, (long) PAGES * MachineMemory.FRAME_SIZE, (long) PAGES * MachineMemory.FRAME_SIZE);
    }

    @TearDown(Level.Trial)
    public void tearDown() throws IOException {
        host.close();
        rawChannel.close();
        try (var files = Files.list(dir)) {
            for (Path f : (Iterable<Path>) files::iterator) {
                Files.deleteIfExists(f);
            }
        }
        Files.deleteIfExists(dir);
    }

    @Benchmark
    public long rawWriteAndRead() {
        int p = next++ & (PAGES - 1);
        raw.put(p * MachineMemory.FRAME_SIZE, page);
        raw.get(p * MachineMemory.FRAME_SIZE, back);
        return back[p & 4095];
    }

    @Benchmark
    @OperationsPerInvocation(PAGES)
    public long rawWrite() {
        for (int p = 0; p < PAGES; p++) {
            raw.put(p * MachineMemory.FRAME_SIZE, page);
        }
        return raw.get(next++ & 4095);
    }

    @Benchmark
    @OperationsPerInvocation(PAGES)
    public long rawRead() {
        long sum = 0;
        for (int p = 0; p < PAGES; p++) {
            raw.get(p * MachineMemory.FRAME_SIZE, back);
            sum += back[p & 4095];
        }
        return sum;
    }

    /** A guest of its own whose 1024 pages are all in memory when each invocation starts. */
    @State(Scope.Thread)
    public static class Resident extends OwnGuest {
        @Setup(Level.Invocation)
        public void bringBackIn() {
            for (int p = 0; p < PAGES; p++) {
                vm.readPhysicalLong((long) p << MachineMemory.FRAME_SHIFT); // a swapped page comes back in
            }
        }
    }

    /** A guest of its own whose 1024 pages are all on swap when each invocation starts. */
    @State(Scope.Thread)
    public static class OnSwap extends OwnGuest {
        @Setup(Level.Invocation)
        public void sendOut() {
            for (int p = 0; p < PAGES; p++) {
                vm.swapOut(p);
            }
        }
    }

    /** A 64 MiB host with a swap file of 2048 slots in {@code dir}. */
    static Host hostWithSwap(Path dir) throws IOException {
        Host host = Host.create(64L << 20);
        host.attachSwap(SwapDevice.create(dir.resolve("swap"), 2 * PAGES));
        return host;
    }

    /** A 16 MiB nested guest on {@code host} whose first 1024 pages hold random bytes from {@code seed}. */
    static Vm writtenGuest(Host host, long seed) {
        Vm vm = host.createVm(VmConfig.of(16L << 20));
        byte[] page = new byte[MachineMemory.FRAME_SIZE];
        SplittableRandom random = new SplittableRandom(seed);
        for (int p = 0; p < PAGES; p++) {
            random.nextBytes(page);
            vm.writePhysical((long) p << MachineMemory.FRAME_SHIFT, page, 0, page.length);
        }
        return vm;
    }

    /** A 16 MiB nested guest with 1024 written pages on a host with a swap file of its own. */
    abstract static class OwnGuest {
        Path dir;
        Host host;
        Vm vm;

        @Setup(Level.Trial)
        public void create() throws IOException {
            dir = Files.createTempDirectory("vmpage-swapbench");
            host = hostWithSwap(dir);
            vm = writtenGuest(host, 0x5B);
        }

        @TearDown(Level.Trial)
        public void close() throws IOException {
            host.close();
            Files.deleteIfExists(dir.resolve("swap"));
            Files.deleteIfExists(dir);
        }
    }

    @Benchmark
    @OperationsPerInvocation(PAGES)
    @Baseline("rawWrite")
    public long swapOut(Resident r) {
        long out = 0;
        for (int p = 0; p < PAGES; p++) {
            if (r.vm.swapOut(p)) {
                out++;
            }
        }
        if (out != PAGES) {
            throw new IllegalStateException(out + " of " + PAGES + " pages were swapped out");
        }
        return out;
    }

    @Benchmark
    @OperationsPerInvocation(PAGES)
    @Baseline("rawRead")
    public long swapIn(OnSwap s) {
        long sum = 0;
        for (int p = 0; p < PAGES; p++) {
            sum += s.vm.readPhysicalLong((long) p << MachineMemory.FRAME_SHIFT);
        }
        if (s.vm.swappedFrames() != 0) {
            throw new IllegalStateException(s.vm.swappedFrames() + " pages are still on swap");
        }
        return sum;
    }

    @Benchmark
    @Baseline("rawWriteAndRead")
    public long swapOutAndIn() {
        long gfn = next++ & (PAGES - 1);
        if (!vm.swapOut(gfn)) {
            throw new IllegalStateException("guest frame " + gfn + " was not swapped out");
        }
        return vm.readPhysicalLong(gfn << MachineMemory.FRAME_SHIFT); // swaps it back in
    }
}
