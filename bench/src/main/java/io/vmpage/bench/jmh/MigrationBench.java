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
 * A whole in-process migration's page copy: stop-and-copy of a 64 MiB guest whose every page holds
 * random (non-zero) bytes, unlimited bandwidth, over the default {@code MemoryTransport} (the source
 * thread copies each page from guest memory into a direct chunk, the destination thread from the chunk
 * into a frame it populates), without the page-by-page verification; the destination VM is destroyed
 * and the source resumed after each. Baseline: one raw {@code copyMemory} of the same 64 MiB between two
 * touched off-heap regions. The ratio is the migration's copy throughput against the memory's. The
 * stream's CRC32C runs over every byte on both ends: {@code crc32c} times it over the same 64 MiB, to
 * show its share.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
public class MigrationBench {
    private static final long GUEST = 64L << 20;

    private Host source;
    private Host destination;
    private Vm vm;
    private MigrationConfig config;
    /** The raw source: a direct buffer (off-heap), so the CRC can take it as a ByteBuffer. */
    private java.nio.ByteBuffer rawSource;
    private long rawSourceAddress;
    private NativeRegion rawDestination;

    @Setup(Level.Trial)
    public void setUp() {
        source = Host.create(GUEST + (32L << 20));
        destination = Host.create(GUEST + (32L << 20));
        vm = source.createVm(VmConfig.of(GUEST));
        byte[] page = new byte[4096];
        SplittableRandom random = new SplittableRandom(0x316);
        rawSource = java.nio.ByteBuffer.allocateDirect((int) GUEST);
        rawSourceAddress = org.agrona.BufferUtil.address(rawSource);
        rawDestination = NativeRegion.allocate(GUEST);
        for (long gpa = 0; gpa < GUEST; gpa += page.length) {
            random.nextBytes(page);
            vm.writePhysical(gpa, page, 0, page.length);
            UnsafeApi.copyMemory(page, UnsafeApi.arrayBaseOffset(byte[].class), null, rawSourceAddress + gpa, page.length);
            UnsafeApi.putLong(rawDestination.address() + gpa, 1);
        }
        config = MigrationConfig.defaults().withMode(MigrationConfig.Mode.STOPCOPY).withVerify(false);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        destination.close();
        source.close();
        rawDestination.free();
    }

    @Benchmark
    public long rawCopy() {
        UnsafeApi.copyMemory(rawSourceAddress, rawDestination.address(), GUEST);
        return UnsafeApi.getLong(rawDestination.address() + GUEST - 8);
    }

    /** JDK's CRC32C (an intrinsic) over the 64 MiB, as the stream's END digest covers it, on each end. */
    @Benchmark
    @Baseline("rawCopy")
    public long crc32c() {
        java.util.zip.CRC32C crc = new java.util.zip.CRC32C();
        crc.update(rawSource.clear());
        return crc.getValue();
    }

    @Benchmark
    @Baseline("rawCopy")
    public long stopAndCopy() {
        Migration.Result result = Migration.toHost(vm, destination, config);
        MigrationReport report = result.report();
        if (report.pagesSent() != GUEST / 4096 || report.zeroPages() != 0) {
            throw new IllegalStateException("sent " + report.pagesSent() + " pages, " + report.zeroPages() + " zero");
        }
        destination.destroyVm(result.destination());
        vm.resume();
        return report.bytesSent();
    }
}
