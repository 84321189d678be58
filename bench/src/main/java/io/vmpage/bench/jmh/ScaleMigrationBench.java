package io.vmpage.bench.jmh;

import io.vmpage.engine.Host;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.migration.Migration;
import io.vmpage.migration.MigrationConfig;
import io.vmpage.migration.MigrationReport;
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
 * The scale run of a migration: a 16 GiB guest of which 2 GiB were written (random bytes, no zero page),
 * moved in-process by stop-and-copy at unlimited bandwidth and without the page-by-page verification,
 * which reads all 16 GiB: pages by reference (the default in-process), and through the stream ({@code ByValue}). Only the written pages cross (the untouched 14 GiB are never populated, so
 * never sent); the benchmark checks that. The destination VM is destroyed and the source resumed after
 * each, outside the timing ({@link MigrationBench.Undo}). Baseline: one raw {@code copyMemory} of 2 GiB between two
 * touched off-heap regions. The source and destination hosts map 16 GiB and more each, lazily: RAM holds
 * the 2 GiB on each side and the two raw regions, about 8 GiB in all.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
public class ScaleMigrationBench {
    private static final long GUEST = 16L << 30;
    private static final long WRITTEN = 2L << 30;

    private Host source;
    private Host destination;
    private Vm vm;
    private MigrationConfig config;
    private NativeRegion rawSource;
    private NativeRegion rawDestination;

    @Setup(Level.Trial)
    public void setUp() {
        source = Host.create(GUEST + (256L << 20));
        destination = Host.create(GUEST + (256L << 20));
        vm = source.createVm(VmConfig.of(GUEST));
        rawSource = NativeRegion.allocate(WRITTEN);
        rawDestination = NativeRegion.allocate(WRITTEN);
        byte[] page = new byte[4096];
        SplittableRandom random = new SplittableRandom(0x16);
        for (long gpa = 0; gpa < WRITTEN; gpa += page.length) {
            random.nextBytes(page);
            vm.writePhysical(gpa, page, 0, page.length);
            UnsafeApi.copyMemory(page, UnsafeApi.arrayBaseOffset(byte[].class), null, rawSource.address() + gpa, page.length);
            UnsafeApi.putLong(rawDestination.address() + gpa, 1);
        }
        config = MigrationConfig.defaults().withMode(MigrationConfig.Mode.STOPCOPY).withVerify(false);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        destination.close();
        source.close();
        rawSource.free();
        rawDestination.free();
    }

    @Benchmark
    public long rawCopy2GiB() {
        UnsafeApi.copyMemory(rawSource.address(), rawDestination.address(), WRITTEN);
        return UnsafeApi.getLong(rawDestination.address() + WRITTEN - 8);
    }

    @Benchmark
    @Baseline("rawCopy2GiB")
    public long stopAndCopy16GiBGuest(MigrationBench.Undo undo) {
        return migrate(undo, 1);
    }

    @Benchmark
    @Baseline("rawCopy2GiB")
    public long stopAndCopy16GiBGuest2Channels(MigrationBench.Undo undo) {
        return migrate(undo, 2);
    }

    /** The same with every page through the stream (the A/B of pages by reference, the default in-process). */
    @Benchmark
    @Baseline("rawCopy2GiB")
    public long stopAndCopy16GiBGuestByValue(MigrationBench.Undo undo) {
        return migrate(undo, 1, config.withPageReferences(false));
    }

    private long migrate(MigrationBench.Undo undo, int channels) {
        return migrate(undo, channels, config);
    }

    private long migrate(MigrationBench.Undo undo, int channels, MigrationConfig how) {
        Migration.Result result = Migration.toHost(vm, destination, how.withChannels(channels));
        undo.destroy(destination, result.destination(), vm);
        MigrationReport report = result.report();
        if (report.pagesSent() != WRITTEN / 4096 || report.zeroPages() != 0) {
            throw new IllegalStateException("sent " + report.pagesSent() + " pages, " + report.zeroPages() + " zero");
        }
        return report.bytesSent();
    }
}
