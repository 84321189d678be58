package io.vmpage.bench.jmh;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.dirty.DirtyBitmap;
import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.dirty.DirtySnapshot;
import io.vmpage.engine.dirty.DirtyTracking;
import io.vmpage.engine.guest.GuestKernel;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.NativeRegion;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.agrona.UnsafeApi;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OperationsPerInvocation;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * The engine's dirty logging ({@link DirtyLog}): what it costs a running guest and what its control
 * operations cost the VMM. Four measurements, each against an in-run baseline:
 * <ul>
 * <li>{@code trackedWrite} (baseline {@code untrackedWrite}; goal at most 1.1x): the steady state of a
 *     guest under logging. One vCPU stores 8 bytes at random offsets in a hot set of 64 user pages that
 *     are already dirty and writable under the log (logging enabled, each page written once, no harvest
 *     while measuring), so every store hits the TLB and none exits. The baseline is the same store on a VM
 *     built and warmed the same way with logging off. Parameter {@code config}: paging mode / tracking
 *     method, only the supported pairs (dirty bits need EPT A/D, so nested paging only). Reference: on
 *     hardware the steady-state store costs nothing extra (the page is writable, or its EPT D bit is
 *     already set), so the ratio is pure model overhead.</li>
 * <li>{@code enableWriteProtect} (baseline {@code readLeafWords}; ms per GiB): {@link DirtyLog#enable} with
 *     write protection on a 1 GiB nested guest whose 262,144 frames are all mapped writable in the EPT:
 *     the sweep clears W in every EPT leaf by CAS, then flushes the vCPU's TLB. Every leaf must be
 *     writable again before each measured enable, or the sweep would find nothing to revoke and measure
 *     a read-only walk: the restore (disable, then a store to every page, each a write-protect exit, about
 *     75 ms once compiled) is an invocation-level setup, excluded from the score. An enable takes
 *     milliseconds, so the per-invocation timestamps JMH adds are negligible, and {@code AverageTime}
 *     averages the dozen or so enables that fit in a 1 s iteration, where {@code SingleShotTime} would
 *     measure one per iteration. Baseline: a plain sequential read of 262,144 8-byte words (2 MiB, one per
 *     EPT leaf of the guest) in one raw region, the floor of any sweep that must look at every leaf. The
 *     real leaves sit in 512 scattered table frames and are CAS-ed, so the ratio is the cost of the table
 *     walk, the CAS and the flush. Reference: KVM takes 4-5 ms per GiB to write-protect guest memory with
 *     4 KiB pages.</li>
 * <li>{@code harvestBitmap} (baseline {@code scanBitmapWords}; µs per harvest): {@link DirtyBitmap#harvest}
 *     of a 64 GiB guest's bitmap (16,777,216 frames, 262,144 words, 2 MiB) with 1% of the frames dirty
 *     (167,772 frames, seeded, re-marked before each invocation: about 47% of the words are non-zero and
 *     taken by an atomic get-and-set). Baseline: a plain read of the same number of words holding the same
 *     bits, counting them (what harvest returns), the memory-bandwidth floor. Both work on 2 MiB that the
 *     previous invocation (or its setup) left in the last-level cache, so this is the cache-bandwidth floor,
 *     not DRAM's. No real-system figure is quoted: KVM's {@code GET_DIRTY_LOG} does the same word-by-word
 *     exchange but is usually measured together with the re-protection it triggers, which this leaves
 *     out; the ratio to the scan is the cost of the atomics and the bounds-checked buffer.</li>
 * <li>{@code firstWriteFault} (baseline {@code writeWritable}; ns per page): nested paging, write protection.
 *     Each invocation stores once into each of 4096 user pages that the harvest before it (the
 *     invocation's setup, not measured) reported and write-protected again, so every store takes a
 *     write-protect exit: EPT violation, CAS granting W, mark in the bitmap, retry. With EPT A/D on, a walk
 *     of the guest's page tables counts as a write to them, so the 8 page tables mapping the pages and the
 *     PD, PDPT and PML4 above them are logged, re-protected and faulted on too: 4107 exits per 4096 pages,
 *     0.3% more than one per page. Baseline: the same 4096 stores on a VM with logging off, after the same
 *     TLB flush the harvest does, so both sides miss the TLB and walk; the difference is the fault.
 *     Reference: about 260 ns per page in Cloud Hypervisor.</li>
 * </ul>
 * Steady-state paths allocate nothing (0 B/op expected from the GC profiler; the benchmarks with an
 * invocation-level setup may show some B/op: the profiler counts allocation over the whole iteration, setup
 * included).
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class DirtyLogBench {
    static final long HEAP = 0x0000_5555_0000_0000L;
    static final int HOT_PAGES = 64;
    static final int SLOTS = 1 << 16;
    /** Pages each first-write invocation dirties. */
    static final int FAULT_PAGES = 4096;
    static final long ENABLE_GUEST_BYTES = 1L << 30;
    /** A 64 GiB guest in 4 KiB frames. */
    static final long HARVEST_FRAMES = (64L << 30) >>> MachineMemory.FRAME_SHIFT;
    /** 1% of {@link #HARVEST_FRAMES}. */
    static final int HARVEST_DIRTY = (int) (HARVEST_FRAMES / 100);
    private static final long SEED = 0xD1127L;

    // ------------------------------------------------------------------ 1. steady-state writes

    /**
     * A VM with a guest kernel, one user address space and a hot set of {@link #HOT_PAGES} pages at
     * {@link #HEAP}, each written once (demand-zero) with logging off. {@link #config} is
     * {@code PAGING/METHOD}; the subclasses differ only in whether they then turn the log on.
     */
    @State(Scope.Thread)
    public abstract static class HotSet {
        @Param({"NESTED/WRITE_PROTECT", "NESTED/DIRTY_BITS", "NESTED/DIRTY_RING", "SHADOW/WRITE_PROTECT",
            "PARAVIRTUAL/WRITE_PROTECT"})
        public String config;

        Host host;
        Vm vm;
        Vcpu cpu;
        long[] offsets;
        int cursor;

        final void build(boolean tracked) {
            String[] parts = config.split("/");
            PagingMode paging = PagingMode.valueOf(parts[0]);
            DirtyTracking method = DirtyTracking.valueOf(parts[1]);
            host = Host.create(64L << 20);
            vm = host.createVm(VmConfig.of(32L << 20).withPaging(paging));
            GuestKernel kernel = GuestKernel.boot(vm);
            cpu = vm.vcpu(0);
            cpu.attachThread();
            GuestKernel.AddressSpace space = kernel.createAddressSpace(cpu);
            kernel.mmap(space, HEAP, HOT_PAGES * 4096L, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE);
            kernel.switchTo(cpu, space);
            touchHotPages(); // demand-zero, logging off
            if (tracked) {
                vm.dirtyLog().enable(method);
            }
            touchHotPages(); // tracked: dirty and writable under the log, one logged first write per page
            // (both sides end with the same 64 writable translations in the TLB)
            SplittableRandom random = new SplittableRandom(SEED);
            offsets = new long[SLOTS];
            for (int i = 0; i < SLOTS; i++) {
                offsets[i] = random.nextLong(HOT_PAGES * 512L) << 3;
            }
        }

        private void touchHotPages() {
            for (int p = 0; p < HOT_PAGES; p++) {
                cpu.writeLong(HEAP + p * 4096L, p);
            }
        }

        final void write() {
            int i = cursor++;
            cpu.writeLong(HEAP + offsets[i & (SLOTS - 1)], i);
        }

        final void close() {
            cpu.detachThread();
            host.close();
        }
    }

    /** {@link HotSet} with the log on, by {@link HotSet#config}'s method, the hot pages already logged. */
    public static class Tracked extends HotSet {
        @Setup(Level.Trial)
        public void setUp() {
            build(true);
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            close();
        }
    }

    /** {@link HotSet} with the log off (same paging mode, same warm-up writes). */
    public static class Untracked extends HotSet {
        @Setup(Level.Trial)
        public void setUp() {
            build(false);
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            close();
        }
    }

    /** A guest store to a hot page with logging off. */
    @Benchmark
    public void untrackedWrite(Untracked s) {
        s.write();
    }

    /** A guest store to a hot page already dirty under the log: no exit, no mark. */
    @Benchmark
    @Baseline("untrackedWrite")
    public void trackedWrite(Tracked s) {
        s.write();
    }

    // ------------------------------------------------------------------ 2. enabling the log

    /**
     * A 1 GiB nested guest booted with the guest kernel (its direct map covers every frame), every frame
     * mapped writable in the EPT by a guest store through the direct map.
     */
    @State(Scope.Thread)
    public static class WholeGuest {
        Host host;
        Vm vm;
        Vcpu cpu;
        long frames;

        @Setup(Level.Trial)
        public void setUp() {
            host = Host.create(ENABLE_GUEST_BYTES + (64L << 20));
            vm = host.createVm(VmConfig.of(ENABLE_GUEST_BYTES).withPaging(PagingMode.NESTED));
            GuestKernel.boot(vm);
            cpu = vm.vcpu(0);
            cpu.attachThread();
            frames = ENABLE_GUEST_BYTES >>> MachineMemory.FRAME_SHIFT;
            makeAllWritable(); // populates all of guest memory (seconds) here rather than in the first invocation
        }

        /**
         * Logging off, and every frame's EPT leaf writable: a guest store to each frame through the direct
         * map (the first maps it, later ones take the exit that gives W back). Each store writes back the
         * word it read, as some frames hold the guest's page tables.
         */
        @Setup(Level.Invocation)
        public void makeAllWritable() {
            vm.dirtyLog().disable();
            for (long gfn = 0; gfn < frames; gfn++) {
                long va = GuestKernel.DIRECT_MAP + (gfn << MachineMemory.FRAME_SHIFT);
                cpu.writeLong(va, cpu.readLong(va));
            }
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            cpu.detachThread();
            host.close();
        }
    }

    /** One 8-byte word per EPT leaf of the 1 GiB guest, in one raw region. */
    @State(Scope.Thread)
    public static class LeafWords {
        NativeRegion raw;
        long address;
        long words;

        @Setup(Level.Trial)
        public void setUp() {
            words = ENABLE_GUEST_BYTES >>> MachineMemory.FRAME_SHIFT;
            raw = NativeRegion.allocate(words * 8);
            address = raw.address();
            for (long i = 0; i < words; i++) { // leaf-like contents: a frame number and flags
                UnsafeApi.putLong(null, address + i * 8, (i << 12) | 0x37);
            }
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            raw.free();
        }
    }

    /** Reads every leaf word once: the floor of a sweep over the 1 GiB guest's EPT leaves. */
    @Benchmark
    @OutputTimeUnit(TimeUnit.MILLISECONDS)
    public long readLeafWords(LeafWords s) {
        long sum = 0;
        long end = s.address + s.words * 8;
        for (long a = s.address; a < end; a += 8) {
            sum += UnsafeApi.getLong(null, a);
        }
        return sum;
    }

    /** Write-protects the whole 1 GiB guest: ms per GiB. */
    @Benchmark
    @OutputTimeUnit(TimeUnit.MILLISECONDS)
    @Baseline("readLeafWords")
    public void enableWriteProtect(WholeGuest s) {
        s.vm.dirtyLog().enable(DirtyTracking.WRITE_PROTECT);
    }

    // ------------------------------------------------------------------ 3. harvesting a bitmap

    /** The 1% dirty frames of the 64 GiB guest (fixed seed), shared by the harvest and its baseline. */
    static int[] dirtyFrames() {
        return new SplittableRandom(SEED).ints(0, (int) HARVEST_FRAMES).distinct().limit(HARVEST_DIRTY).toArray();
    }

    /** A 64 GiB guest's bitmap, 1% marked again before each harvest, and a snapshot to harvest into. */
    @State(Scope.Thread)
    public static class DirtyFrames {
        DirtyBitmap bitmap;
        DirtySnapshot snapshot;
        int[] dirty;

        @Setup(Level.Trial)
        public void setUp() {
            bitmap = new DirtyBitmap(HARVEST_FRAMES);
            snapshot = new DirtySnapshot(HARVEST_FRAMES);
            dirty = dirtyFrames();
        }

        /** 167,772 marks and a 2 MiB clear: a few milliseconds. */
        @Setup(Level.Invocation)
        public void mark() {
            snapshot.clear();
            for (int gfn : dirty) {
                bitmap.mark(gfn);
            }
        }
    }

    /** The same words with the same bits, in a raw region. */
    @State(Scope.Thread)
    public static class BitmapWords {
        NativeRegion raw;
        long address;
        long words;

        @Setup(Level.Trial)
        public void setUp() {
            words = (HARVEST_FRAMES + 63) >>> 6;
            raw = NativeRegion.allocate(words * 8);
            address = raw.address();
            for (int gfn : dirtyFrames()) {
                long at = address + ((long) (gfn >>> 6) << 3);
                UnsafeApi.putLong(null, at, UnsafeApi.getLong(null, at) | (1L << gfn));
            }
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            raw.free();
        }
    }

    /** Reads every word of the bitmap and counts its bits: the bandwidth floor of a harvest. */
    @Benchmark
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    public long scanBitmapWords(BitmapWords s) {
        long n = 0;
        long end = s.address + s.words * 8;
        for (long a = s.address; a < end; a += 8) {
            n += Long.bitCount(UnsafeApi.getLong(null, a));
        }
        return n;
    }

    /** Harvests the 64 GiB guest's bitmap (1% dirty) into a snapshot. */
    @Benchmark
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    @Baseline("scanBitmapWords")
    public long harvestBitmap(DirtyFrames s) {
        return s.bitmap.harvest(s.snapshot);
    }

    // ------------------------------------------------------------------ 4. first writes after a harvest

    /**
     * A nested VM (logging by write protection in {@link Faulting}, off in {@link Writable}) with
     * {@link #FAULT_PAGES} user pages at {@link #HEAP}, each populated by a store in setup.
     */
    @State(Scope.Thread)
    public abstract static class FaultPages {
        Host host;
        Vm vm;
        Vcpu cpu;
        DirtySnapshot snapshot;
        int round;

        final void build(boolean tracked) {
            host = Host.create(128L << 20);
            vm = host.createVm(VmConfig.of(64L << 20).withPaging(PagingMode.NESTED));
            GuestKernel kernel = GuestKernel.boot(vm);
            cpu = vm.vcpu(0);
            cpu.attachThread();
            GuestKernel.AddressSpace space = kernel.createAddressSpace(cpu);
            kernel.mmap(space, HEAP, FAULT_PAGES * 4096L, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE);
            kernel.switchTo(cpu, space);
            writeAll(); // demand-zero, logging off
            snapshot = new DirtySnapshot(vm.physicalMap().frames());
            if (tracked) {
                vm.dirtyLog().enable(DirtyTracking.WRITE_PROTECT);
                writeAll(); // logged, so the first harvest reports (and re-protects) every page
            }
        }

        /** One 8-byte store at the start of each page (the same offset on each, so no page is favoured). */
        final void writeAll() {
            long value = ++round;
            for (int p = 0; p < FAULT_PAGES; p++) {
                cpu.writeLong(HEAP + p * 4096L, value);
            }
        }

        final void close() {
            cpu.detachThread();
            host.close();
        }
    }

    /** {@link FaultPages} under write-protect logging; each invocation is preceded by a harvest. */
    public static class Faulting extends FaultPages {
        @Setup(Level.Trial)
        public void setUp() {
            build(true);
        }

        /** Reports and write-protects the pages the last invocation wrote, and flushes the TLB. */
        @Setup(Level.Invocation)
        public void harvest() {
            vm.dirtyLog().harvest(snapshot);
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            close();
        }
    }

    /** {@link FaultPages} with logging off; each invocation is preceded by the TLB flush a harvest does. */
    public static class Writable extends FaultPages {
        @Setup(Level.Trial)
        public void setUp() {
            build(false);
        }

        @Setup(Level.Invocation)
        public void flush() {
            vm.flushRemoteTlbs();
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            close();
        }
    }

    /** One store to each of 4096 writable pages, TLB cold: ns per page. */
    @Benchmark
    @OperationsPerInvocation(FAULT_PAGES)
    public void writeWritable(Writable s) {
        s.writeAll();
    }

    /** One store to each of 4096 pages the harvest just write-protected: one write-protect exit each, ns per page. */
    @Benchmark
    @OperationsPerInvocation(FAULT_PAGES)
    @Baseline("writeWritable")
    public void firstWriteFault(Faulting s) {
        s.writeAll();
    }
}
