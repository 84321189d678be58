package io.vmpage.bench.jmh;

import io.vmpage.engine.Host;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.sharing.PageSharingScanner;
import io.vmpage.engine.sharing.SharingConfig;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.NativeRegion;
import io.vmpage.mmu.PageTables;
import io.vmpage.mmu.Pte;
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
 * Content-based page sharing. {@code scan}: one step of the ESX scanner ({@code PageSharingScanner.scan})
 * over the 16384 distinct random pages of a 64 MiB guest in turn: the page is looked up, hashed as a host
 * access, and finds its own hint in the table (the steady state of a scanner going round a guest whose
 * pages are all different), against {@code rawHash}, the same 64-bit hash ({@code MachineMemory.frameHash})
 * of the same machine frames with nothing else done. One page per operation: 1 / score is the scan rate
 * per core (KSM's default rate is ~5,000 pages/s).
 *
 * <p>{@code copyOnWriteBreak}: a guest write (a one-off vCPU access) to a page another VM shares with it:
 * the write exits, the engine copies the shared frame into a new private one, remaps the page, flushes the
 * VM's TLBs and drops its reference, and the write lands; the page is shared again before each operation
 * (not timed, a JMH per-invocation setup, whose timestamps add some tens of ns to this one). Baseline
 * {@code rawCopy}: one 4 KiB {@code copyMemory} between two frames of a raw region, cycling through
 * 1024 pairs as the breaks cycle through their 1024 pages.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class SharingBench {
    private static final long GUEST = 64L << 20;
    private static final int PAGES = 16384;
    private static final long VA = 0x7f00_0000_0000L;

    /** A 64 MiB nested VM of distinct random pages, a scanner that has seen them all once. */
    @State(Scope.Thread)
    public static class Scanned {
        Host host;
        Vm vm;
        PageSharingScanner scanner;
        MachineMemory memory;
        long[] frames = new long[PAGES];
        int cursor;

        @Setup(Level.Trial)
        public void setUp() {
            host = Host.create(GUEST + (32L << 20));
            vm = host.createVm(VmConfig.of(GUEST));
            byte[] page = new byte[MachineMemory.FRAME_SIZE];
            SplittableRandom random = new SplittableRandom(0x5CA4);
            for (int p = 0; p < PAGES; p++) {
                random.nextBytes(page);
                vm.writePhysical((long) p << MachineMemory.FRAME_SHIFT, page, 0, page.length);
                frames[p] = vm.physicalMap().machineFrame(p);
            }
            memory = host.memory();
            scanner = new PageSharingScanner(host, SharingConfig.unlimited());
            for (int p = 0; p < PAGES; p++) {
                scanner.scan(vm, p);
            }
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            host.close();
        }
    }

    @Benchmark
    public long rawHash(Scanned s) {
        int p = s.cursor++ & (PAGES - 1);
        return s.memory.frameHash(s.frames[p]);
    }

    @Benchmark
    @Baseline("rawHash")
    public PageSharingScanner.Outcome scan(Scanned s) {
        int p = s.cursor++ & (PAGES - 1);
        return s.scanner.scan(s.vm, p);
    }

    /** Two VMs with the same 1024 pages, page i of VM b shared with page i of VM a before each operation. */
    @State(Scope.Thread)
    public static class Shared {
        static final int SHARED_PAGES = 1024;
        Host host;
        Vm a;
        Vm b;
        Vcpu writer;
        int next;
        int page;
        long value;

        @Setup(Level.Trial)
        public void setUp() {
            host = Host.create(256L << 20);
            a = host.createVm(VmConfig.of(GUEST));
            b = host.createVm(VmConfig.of(GUEST));
            byte[] bytes = new byte[MachineMemory.FRAME_SIZE];
            SplittableRandom random = new SplittableRandom(0xC0);
            for (int p = 0; p < SHARED_PAGES; p++) {
                random.nextBytes(bytes);
                a.writePhysical((long) p << MachineMemory.FRAME_SHIFT, bytes, 0, bytes.length);
                b.writePhysical((long) p << MachineMemory.FRAME_SHIFT, bytes, 0, bytes.length);
            }
            PageTables tables = b.guestPageTables(GUEST - (4L << 20), GUEST); // b's guest maps its pages at VA
            for (int p = 0; p < SHARED_PAGES; p++) {
                tables.map(VA + ((long) p << MachineMemory.FRAME_SHIFT), (long) p << MachineMemory.FRAME_SHIFT, Pte.SHIFT_4K, Pte.P | Pte.RW);
            }
            writer = b.vcpu(0);
            writer.loadCr3(tables.root());
            for (int p = 0; p < SHARED_PAGES; p++) { // every translation and EPT leaf exists: the break is what is timed
                writer.writeLong(VA + ((long) p << MachineMemory.FRAME_SHIFT), b.readPhysicalLong((long) p << MachineMemory.FRAME_SHIFT));
            }
        }

        /** Not timed: page {@code page} of b maps the frame it shares with a. */
        @Setup(Level.Invocation)
        public void share() {
            page = next++ & (SHARED_PAGES - 1);
            if (!host.share(a, page, b, page)) {
                throw new IllegalStateException("page " + page + " did not share");
            }
            value = a.readPhysicalLong((long) page << MachineMemory.FRAME_SHIFT);
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            host.close();
        }
    }

    /** 1024 source and 1024 destination frames of a raw region, touched, cycled through as the breaks cycle through their pages. */
    @State(Scope.Thread)
    public static class RawFrames {
        static final long BYTES = 2L * Shared.SHARED_PAGES * MachineMemory.FRAME_SIZE;
        NativeRegion raw;
        int next;

        @Setup(Level.Trial)
        public void setUp() {
            raw = NativeRegion.allocate(BYTES);
            UnsafeApi.setMemory(raw.address(), BYTES, (byte) 1);
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            raw.free();
        }
    }

    /** The write stores the word already there, so the pages stay equal and share again next time. */
    @Benchmark
    @Baseline("rawCopy")
    public void copyOnWriteBreak(Shared s) {
        s.writer.writeLong(VA + ((long) s.page << MachineMemory.FRAME_SHIFT), s.value);
    }

    @Benchmark
    public void rawCopy(RawFrames f) {
        long from = f.raw.address() + ((long) (f.next++ & (Shared.SHARED_PAGES - 1)) << MachineMemory.FRAME_SHIFT);
        UnsafeApi.copyMemory(from, from + RawFrames.BYTES / 2, MachineMemory.FRAME_SIZE);
    }
}
