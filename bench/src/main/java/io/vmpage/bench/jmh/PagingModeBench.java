package io.vmpage.bench.jmh;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.guest.GuestKernel;
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
 * Per-operation cost of the paging modes, through the guest kernel model on one vCPU: a guest read that
 * hits the TLB, a guest read over a working set far larger than the TLB (nested: a 2D walk on each miss;
 * shadow: a 1D walk of the shadow tables), a page-table update (mprotect of one page, then a touch of
 * it: shadow traps the guest's store to its page table and the INVLPG, paravirtual makes hypercalls), and a context switch (a CR3 load
 * with the PCID no-flush bit, then a touch: shadow exits on the CR3 load).
 *
 * <p>Baselines, in the same run: a raw 8-byte read at random over a region of the same size as each
 * working set ({@code rawReadHot}: 64 pages; {@code rawReadCold}: 32 MiB), on {@link NativeRegion} pages.
 * Page-table updates and context switches are quoted in raw hot reads; compare them across modes.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class PagingModeBench {
    private static final long HEAP = 0x0000_5555_0000_0000L;
    private static final int HOT_PAGES = 64;
    private static final int COLD_PAGES = 8192;
    private static final int SLOTS = 1 << 16;

    @Param({"NESTED", "SHADOW", "PARAVIRTUAL"})
    public String paging;

    private Host host;
    private Vcpu cpu;
    private GuestKernel kernel;
    private GuestKernel.AddressSpace spaceA;
    private GuestKernel.AddressSpace spaceB;
    private boolean onA;
    private boolean writable;
    private NativeRegion raw;
    private long rawAddress;
    private long[] hotOffsets;
    private long[] coldOffsets;
    private int cursor;

    @Setup(Level.Trial)
    public void setUp() {
        host = Host.create(256L << 20);
        Vm vm = host.createVm(VmConfig.of(96L << 20).withPaging(PagingMode.valueOf(paging)));
        kernel = GuestKernel.boot(vm);
        cpu = vm.vcpu(0);
        cpu.attachThread();
        spaceA = kernel.createAddressSpace(cpu);
        spaceB = kernel.createAddressSpace(cpu);
        kernel.mmap(spaceA, HEAP, COLD_PAGES * 4096L, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE);
        kernel.mmap(spaceB, HEAP, HOT_PAGES * 4096L, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE);
        kernel.switchTo(cpu, spaceB);
        for (int p = 0; p < HOT_PAGES; p++) {
            cpu.writeLong(HEAP + p * 4096L, p);
        }
        kernel.switchTo(cpu, spaceA);
        onA = true;
        writable = true;
        for (int p = 0; p < COLD_PAGES; p++) { // demand-zero every page now, not while measuring
            cpu.writeLong(HEAP + p * 4096L, p);
        }
        raw = NativeRegion.allocate(COLD_PAGES * 4096L);
        rawAddress = raw.address();
        for (long off = 0; off < COLD_PAGES * 4096L; off += 4096) {
            UnsafeApi.putLong(null, rawAddress + off, off);
        }
        SplittableRandom random = new SplittableRandom(42);
        hotOffsets = new long[SLOTS];
        coldOffsets = new long[SLOTS];
        for (int i = 0; i < SLOTS; i++) {
            hotOffsets[i] = random.nextLong(HOT_PAGES * 512L) << 3;
            coldOffsets[i] = random.nextLong(COLD_PAGES * 512L) << 3;
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        cpu.detachThread();
        raw.free();
        host.close();
    }

    private int next() {
        return cursor++ & (SLOTS - 1);
    }

    @Benchmark
    public long rawReadHot() {
        return UnsafeApi.getLong(null, rawAddress + hotOffsets[next()]);
    }

    @Benchmark
    public long rawReadCold() {
        return UnsafeApi.getLong(null, rawAddress + coldOffsets[next()]);
    }

    /** A guest read whose translation is in the TLB. */
    @Benchmark
    @Baseline("rawReadHot")
    public long guestReadHot() {
        return cpu.readLong(HEAP + hotOffsets[next()]);
    }

    /** A guest read at random over 32 MiB: mostly TLB misses. */
    @Benchmark
    @Baseline("rawReadCold")
    public long guestReadCold() {
        return cpu.readLong(HEAP + coldOffsets[next()]);
    }

    /** mprotect one page (read-only / writable, alternately), then read it: the page-table update path. */
    @Benchmark
    @Baseline("rawReadHot")
    public long pageTableUpdate() {
        writable = !writable;
        long page = HEAP + (hotOffsets[next()] & ~0xFFFL);
        kernel.mprotect(cpu, spaceA, page, 4096,
            GuestKernel.PROT_READ | (writable ? GuestKernel.PROT_WRITE : 0));
        return cpu.readLong(page);
    }

    /** Switch to the other address space (CR3 load, PCID kept) and read from it. */
    @Benchmark
    @Baseline("rawReadHot")
    public long contextSwitch() {
        onA = !onA;
        kernel.switchTo(cpu, onA ? spaceA : spaceB);
        return cpu.readLong(HEAP + hotOffsets[next()]);
    }
}
