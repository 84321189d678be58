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
 * random (non-zero) bytes, unlimited bandwidth, over the default {@code MemoryTransport} (pages by
 * reference: the source thread checks each for zeros and sends its number, the destination thread copies
 * it out of the source VM into a frame it places filled; {@code stopAndCopyByValue}: through the stream,
 * the source copying each page into a direct chunk and the destination out of it), without the
 * page-by-page verification; the destination VM is destroyed
 * and the source resumed after each, outside the timing ({@link Undo}: the baseline frees nothing either). Baseline: one raw {@code copyMemory} of the same 64 MiB between two
 * touched off-heap regions. The ratio is the migration's copy throughput against the memory's. The
 * stream's CRC32C runs over every byte on both ends: {@code crc32c} times it over the same 64 MiB, to
 * show its share. Over TCP: {@code stopAndCopyTcp} is the same migration over a {@code TcpTransport} on
 * loopback (both ends in this process, a new connection each time), against {@code rawLoopback}, the same
 * 64 MiB written from a direct buffer into a connected loopback {@code SocketChannel} and read by a
 * thread into another, with nothing else done. The {@code 2Channels}/{@code 4Channels} variants run the same
 * migration over that many multifd channels besides the main stream (new connections each time over TCP),
 * against the same baselines: on this 2-core host the channels' threads share two cores with the rest.
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
    private MigrationConfig byValue;
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
        byValue = config.withPageReferences(false);
    }

    /** Loopback pair for {@code rawLoopback}: the receiver thread reads everything and counts it. */
    private java.nio.channels.SocketChannel rawSender;
    private java.nio.channels.SocketChannel rawReceiver;
    private Thread rawReader;
    private final java.util.concurrent.atomic.AtomicLong rawReceived = new java.util.concurrent.atomic.AtomicLong();
    private long rawSent;

    @Setup(Level.Trial)
    public void setUpLoopback() throws java.io.IOException {
        try (java.nio.channels.ServerSocketChannel listener = java.nio.channels.ServerSocketChannel.open()) {
            listener.bind(new java.net.InetSocketAddress(java.net.InetAddress.getLoopbackAddress(), 0));
            rawSender = java.nio.channels.SocketChannel.open(listener.getLocalAddress());
            rawReceiver = listener.accept();
        }
        rawSender.setOption(java.net.StandardSocketOptions.TCP_NODELAY, true);
        rawReader = new Thread(() -> {
            java.nio.ByteBuffer in = java.nio.ByteBuffer.allocateDirect(256 << 10);
            try {
                for (int n = rawReceiver.read(in); n >= 0; n = rawReceiver.read(in.clear())) {
                    rawReceived.addAndGet(n);
                }
            } catch (java.io.IOException closed) {
                // tear-down
            }
        }, "raw-loopback-reader");
        rawReader.setDaemon(true);
        rawReader.start();
    }

    @TearDown(Level.Trial)
    public void tearDown() throws Exception {
        helper.shutdownNow();
        rawSender.close();
        rawReceiver.close();
        destination.close();
        source.close();
        rawDestination.free();
    }

    @Benchmark
    public long rawCopy() {
        UnsafeApi.copyMemory(rawSourceAddress, rawDestination.address(), GUEST);
        return UnsafeApi.getLong(rawDestination.address() + GUEST - 8);
    }

    /** A thread kept for {@code rawCopyTwoThreads}: it copies the upper half while the benchmark thread copies the lower. */
    private java.util.concurrent.ExecutorService helper;
    /** Every guest frame of the VM, in order, for {@code copyFramesOnly}. */
    private long[] allFrames;

    @Setup(Level.Trial)
    public void setUpHelpers() {
        helper = java.util.concurrent.Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "raw-copy-helper");
            t.setDaemon(true);
            return t;
        });
        allFrames = new long[(int) (GUEST >>> 12)];
        for (int i = 0; i < allFrames.length; i++) {
            allFrames[i] = i;
        }
    }

    /**
     * The same 64 MiB copied by two threads at once, half each: how much a second core adds to a copy that
     * memory bandwidth bounds (the most a migration could gain by copying on both cores).
     */
    @Benchmark
    @Baseline("rawCopy")
    public long rawCopyTwoThreads() throws Exception {
        java.util.concurrent.Future<?> upper = helper.submit(
            () -> UnsafeApi.copyMemory(rawSourceAddress + GUEST / 2, rawDestination.address() + GUEST / 2, GUEST / 2));
        UnsafeApi.copyMemory(rawSourceAddress, rawDestination.address(), GUEST / 2);
        upper.get();
        return UnsafeApi.getLong(rawDestination.address() + GUEST - 8);
    }

    /**
     * The destination's share of an in-process migration alone, no stream: a VM created on the destination
     * host, all 16,384 pages copied out of the source VM by {@code Vm.copyFramesFrom} (frames taken, filled
     * and installed), the VM destroyed.
     */
    @Benchmark
    @Baseline("rawCopy")
    public long copyFramesOnly(Undo undo) {
        Vm copy = destination.createVm(VmConfig.of(GUEST));
        copy.copyFramesFrom(vm, allFrames, allFrames.length);
        undo.destroy(destination, copy, null);
        return copy.populatedFrames();
    }

    /** {@code copyFramesOnly} with the upper half of the pages copied by a second thread meanwhile. */
    @Benchmark
    @Baseline("rawCopy")
    public long copyFramesOnlyTwoThreads(Undo undo) throws Exception {
        Vm copy = destination.createVm(VmConfig.of(GUEST));
        int half = allFrames.length / 2;
        java.util.concurrent.Future<?> upper = helper.submit(() -> copy.copyFramesFrom(vm, allFrames, half, allFrames.length - half));
        copy.copyFramesFrom(vm, allFrames, 0, half);
        upper.get();
        undo.destroy(destination, copy, null);
        return copy.populatedFrames();
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
    public long stopAndCopy(Undo undo) {
        try (io.vmpage.migration.MemoryTransport link = new io.vmpage.migration.MemoryTransport()) {
            return migrateOver(undo, link);
        }
    }

    /**
     * The same with every page in the stream ({@code withPageReferences(false)}), as before pages could go
     * by reference: the source copies each into a chunk, the destination out of it. The A/B of the two.
     */
    @Benchmark
    @Baseline("rawCopy")
    public long stopAndCopyByValue(Undo undo) {
        try (io.vmpage.migration.MemoryTransport link = new io.vmpage.migration.MemoryTransport()) {
            return migrateOver(undo, link, 1, byValue);
        }
    }

    /** The same over 2 multifd channels (QEMU's default), each with a thread at both ends. */
    @Benchmark
    @Baseline("rawCopy")
    public long stopAndCopy2Channels(Undo undo) {
        try (io.vmpage.migration.MemoryTransport link = new io.vmpage.migration.MemoryTransport()) {
            return migrateOver(undo, link, 2);
        }
    }

    @Benchmark
    @Baseline("rawCopy")
    public long stopAndCopy4Channels(Undo undo) {
        try (io.vmpage.migration.MemoryTransport link = new io.vmpage.migration.MemoryTransport()) {
            return migrateOver(undo, link, 4);
        }
    }

    private long migrateOver(Undo undo, io.vmpage.migration.Transport link) {
        return migrateOver(undo, link, 1);
    }

    /** One stop-and-copy over {@code link} and {@code channels} channels, checked; {@code undo} undoes it after the timing. */
    private long migrateOver(Undo undo, io.vmpage.migration.Transport link, int channels) {
        return migrateOver(undo, link, channels, config);
    }

    private long migrateOver(Undo undo, io.vmpage.migration.Transport link, int channels, MigrationConfig how) {
        Migration.Result result = Migration.toHost(vm, destination, link, how.withChannels(channels), round -> { }, running -> { });
        undo.destroy(destination, result.destination(), vm);
        MigrationReport report = result.report();
        if (report.pagesSent() != GUEST / 4096 || report.zeroPages() != 0) {
            throw new IllegalStateException("sent " + report.pagesSent() + " pages, " + report.zeroPages() + " zero");
        }
        return report.bytesSent();
    }

    /**
     * What a benchmark call leaves to undo, undone after it and outside its timing: the destination VM
     * destroyed (a raw copy frees nothing either) and the source resumed.
     */
    @State(Scope.Thread)
    public static class Undo {
        private Host host;
        private Vm destroy;
        private Vm resume;

        void destroy(Host on, Vm vm, Vm source) {
            host = on;
            destroy = vm;
            resume = source;
        }

        @TearDown(Level.Invocation)
        public void undo() {
            if (destroy != null) {
                host.destroyVm(destroy);
                destroy = null;
            }
            if (resume != null) {
                resume.resume();
                resume = null;
            }
        }
    }

    @Benchmark
    public long rawLoopback() throws java.io.IOException {
        java.nio.ByteBuffer b = rawSource.clear();
        while (b.hasRemaining()) {
            rawSent += rawSender.write(b);
        }
        while (rawReceived.get() < rawSent) {
            Thread.onSpinWait();
        }
        return rawSent;
    }

    @Benchmark
    @Baseline("rawLoopback")
    public long stopAndCopyTcp(Undo undo) {
        return overTcp(undo, 1);
    }

    /** Over loopback with 2 multifd channels: three connections, the pages on two of them. */
    @Benchmark
    @Baseline("rawLoopback")
    public long stopAndCopyTcp2Channels(Undo undo) {
        return overTcp(undo, 2);
    }

    @Benchmark
    @Baseline("rawLoopback")
    public long stopAndCopyTcp4Channels(Undo undo) {
        return overTcp(undo, 4);
    }

    private long overTcp(Undo undo, int channels) {
        try (io.vmpage.migration.Transport link = io.vmpage.migration.TcpTransport.loopback(
            io.vmpage.migration.MemoryTransport.DEFAULT_CHUNK, 10_000)) {
            return migrateOver(undo, link, channels);
        }
    }
}
