package io.vmpage.migration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.dirty.DirtyTracking;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.util.EnumSet;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.BiFunction;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Multifd (QEMU's parallel channels, {@link Multifd}): pages go over several connections, each with a
 * thread at both ends, while the writers never pause; a page dirtied again is re-sent on whichever
 * channel has room, so the per-round SYNC must keep an old copy from landing after a new one. Every
 * paging mode, tracking method and way of driving a vCPU; in memory and over TCP; a channel lost or
 * corrupted fails the migration with the source running and nothing lost.
 */
class MultifdTest {
    private static final long MEMORY = 32L << 20;
    private static final int PAGES = 256;
    private static final int WRITERS = 2;

    static java.util.List<org.junit.jupiter.params.provider.Arguments> combinations() {
        return MigrationTest.combinations();
    }

    /**
     * Pre-copy over 2 or 4 channels, five rounds of a hot set the writers keep rewriting (so pages are
     * re-sent on other channels than before): the destination equals the paused source, every journaled
     * write is there, and the pages really went over the channels.
     */
    @ParameterizedTest
    @MethodSource("combinations")
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void preCopyOverChannelsUnderRunningWritersLosesNothing(PagingMode mode, DirtyTracking how, boolean attached) throws Exception {
        int channels = attached ? 2 : 4;
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20);
             Tapped link = new Tapped(new MemoryTransport(), (i, t) -> t)) {
            Workload guest = new Workload(source, mode, WRITERS, MEMORY, PAGES, Workload.Pattern.HOTSET, 32, 0);
            try (guest) {
                guest.start(attached, 11);
                guest.awaitWrites(200);
                Migration.Result result = Migration.toHost(guest.vm(), destination, link, MigrationConfig.defaults()
                    .withTracking(how).withBandwidth(128L << 20).withChannels(channels)
                    .withStopRules(EnumSet.of(MigrationConfig.StopRule.XEN_MAX_ROUNDS)).withMaxRounds(5), r -> { }, vm -> { });
                MigrationReport report = result.report();
                assertTrue(report.verified(), report.mismatchedPages() + " pages differ from the paused source");
                assertEquals(6, report.rounds(), "five pre-copy rounds and the stop-and-copy");
                assertEquals(channels, link.bytesByChannel.size(), "every channel was opened");
                long onChannels = link.bytesByChannel.values().stream().mapToLong(AtomicLong::get).sum();
                assertTrue(link.bytesByChannel.values().stream().allMatch(n -> n.get() > 0), "every channel carried bytes: "
                    + link.bytesByChannel);
                assertTrue(onChannels > (report.pagesSent() - report.zeroPages()) * 4096L, "the pages went over the channels: "
                    + onChannels + " bytes for " + report.pagesSent() + " pages, " + report.zeroPages() + " of them zero");
                guest.follow(result.destination());
                source.destroyVm(guest.vm());
                guest.awaitWrites(200);
                guest.stop();
                assertEquals(0, guest.journalMismatches(result.destination()), "journaled writes missing on the destination");
            }
        }
    }

    /**
     * The race the SYNC barrier closes: channel 1's destination end lags (each chunk waits 2 ms) while
     * the hot set is re-sent every round on whichever channel is free, so a page's older copy is often
     * still queued on channel 1 when its newer copy arrives on channel 2. Without the barrier the older
     * copy would land last and the destination would differ from the source.
     */
    @ParameterizedTest
    @CsvSource({"NESTED, 2", "SHADOW, 4"})
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void aLaggingChannelNeverLandsAnOldCopyOverANewOne(PagingMode mode, int channels) throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20);
             Tapped link = new Tapped(new MemoryTransport(16, 16 << 10, 10_000), (i, t) -> i == 1 ? new Lagging(t) : t)) {
            Workload guest = new Workload(source, mode, WRITERS, MEMORY, PAGES, Workload.Pattern.HOTSET, 64, 0);
            try (guest) {
                guest.start(true, 13);
                guest.awaitWrites(200);
                Migration.Result result = Migration.toHost(guest.vm(), destination, link, MigrationConfig.defaults()
                    .withChannels(channels).withStopRules(EnumSet.of(MigrationConfig.StopRule.XEN_MAX_ROUNDS)).withMaxRounds(8),
                    r -> { }, vm -> { });
                assertTrue(result.report().verified(), result.report().mismatchedPages() + " pages differ from the paused source");
                guest.follow(result.destination());
                source.destroyVm(guest.vm());
                guest.stop();
                assertEquals(0, guest.journalMismatches(result.destination()));
            }
        }
    }

    /** Stop-and-copy over 3 channels sends every populated page once, zero pages as a flag, the counts summed. */
    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void stopAndCopyOverChannelsSendsEveryPopulatedPageOnce() throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            Workload guest = new Workload(source, PagingMode.SHADOW, WRITERS, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            try (guest) {
                guest.populateZeroFrames(16);
                guest.start(true, 3);
                guest.awaitWrites(100);
                long populated = guest.vm().populatedFrames();
                Migration.Result result = Migration.toHost(guest.vm(), destination,
                    MigrationConfig.defaults().withMode(MigrationConfig.Mode.STOPCOPY).withChannels(3));
                MigrationReport report = result.report();
                assertTrue(report.verified());
                assertEquals(populated, report.pagesSent(), "populated pages only, once each");
                assertEquals(16, report.zeroPages());
                assertTrue(report.bytesSent() < (populated - 16 + 1) * 4200L + 3 * 64, "zero pages carry no 4 KiB");
                guest.follow(result.destination());
                source.destroyVm(guest.vm());
                guest.awaitWrites(100);
                guest.stop();
                assertEquals(0, guest.journalMismatches(result.destination()));
            }
        }
    }

    /** Hybrid: the pre-copy rounds over the channels, then post-copy on the main stream once they all ended. */
    @ParameterizedTest
    @CsvSource({"NESTED, true", "SHADOW, false"})
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void hybridPreCopiesOverChannelsThenPostCopiesOnTheMainStream(PagingMode mode, boolean attached) throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            Workload guest = new Workload(source, mode, WRITERS, MEMORY, PAGES, Workload.Pattern.HOTSET, 64, 0);
            try (guest) {
                guest.start(attached, 23);
                guest.awaitWrites(200);
                Migration.Result result = Migration.toHost(guest.vm(), destination, MigrationConfig.defaults()
                        .withMode(MigrationConfig.Mode.HYBRID).withBandwidth(16L << 20).withChannels(2)
                        .withStopRules(EnumSet.of(MigrationConfig.StopRule.XEN_MAX_ROUNDS)).withMaxRounds(3), r -> { },
                    running -> {
                        guest.follow(running);
                        guest.vm().retireVcpus();
                    });
                MigrationReport report = result.report();
                assertTrue(report.verified(), report.mismatchedPages() + " pages differ");
                assertNotNull(report.postCopy());
                assertTrue(report.postCopy().pagesPushed() > 0, report.perRound().toString());
                guest.awaitWrites(100);
                guest.stop();
                assertEquals(0, guest.journalMismatches(result.destination()));
            }
        }
    }

    /** Over TCP: loopback in one process, and between a source and a destination that share only the listener. */
    @ParameterizedTest
    @CsvSource({"NESTED, PRECOPY", "PARAVIRTUAL, STOPCOPY", "SHADOW, HYBRID"})
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void channelsOverTcpMigrateAVmVerified(PagingMode mode, MigrationConfig.Mode algorithm) throws Exception {
        MigrationConfig config = MigrationConfig.defaults().withMode(algorithm).withBandwidth(128L << 20).withChannels(3)
            .withStopRules(EnumSet.of(MigrationConfig.StopRule.XEN_MAX_ROUNDS)).withMaxRounds(3);
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20);
             Transport link = TcpTransport.loopback(64 << 10, 10_000)) {
            Workload guest = new Workload(source, mode, WRITERS, MEMORY, PAGES, Workload.Pattern.HOTSET, 64, 0);
            try (guest) {
                guest.start(true, 29);
                guest.awaitWrites(200);
                Migration.Result result = Migration.toHost(guest.vm(), destination, link, config, r -> { }, running -> {
                    guest.follow(running);
                    guest.vm().retireVcpus();
                });
                assertTrue(result.report().verified(), result.report().mismatchedPages() + " pages differ");
                guest.awaitWrites(100);
                guest.stop();
                assertEquals(0, guest.journalMismatches(result.destination()));
            }
        }
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20);
             ServerSocketChannel listener = TcpTransport.listen(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            AtomicReference<Object> received = new AtomicReference<>();
            Thread destinationProcess = new Thread(() -> {
                try (TcpTransport end = TcpTransport.accept(listener, 64 << 10, 10_000)) {
                    received.set(RemoteMigration.receive(destination, end, vm -> { }));
                } catch (Throwable t) {
                    received.set(t);
                }
            });
            destinationProcess.start();
            Workload guest = new Workload(source, mode, WRITERS, MEMORY, PAGES, Workload.Pattern.HOTSET, 64, 0);
            try (guest; TcpTransport link = TcpTransport.connect((InetSocketAddress) listener.getLocalAddress(), 64 << 10, 10_000)) {
                guest.start(false, 31);
                guest.awaitWrites(200);
                MigrationReport report = RemoteMigration.send(guest.vm(), link, config, r -> { });
                destinationProcess.join();
                assertTrue(received.get() instanceof RemoteMigration.Received, String.valueOf(received.get()));
                assertTrue(report.verified(), report.mismatchedPages() + " pages differ from the paused source");
                guest.vm().retireVcpus();
                guest.stop();
                assertEquals(0, guest.journalMismatches(((RemoteMigration.Received) received.get()).vm()));
            }
        }
    }

    /**
     * One channel's connection dropped in round 0 or a later round, or one of its chunks corrupted: the
     * migration fails, the source runs on with logging off and every write in its memory, and the
     * destination keeps nothing.
     */
    @ParameterizedTest
    @CsvSource({"2, false", "12, false", "12, true"})
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void aChannelLostOrCorruptedFailsTheMigrationWithTheSourceRunning(int chunk, boolean corrupt) throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20);
             Tapped link = new Tapped(new MemoryTransport(16, 16 << 10, 5_000),
                 (i, t) -> i == 2 ? new FaultyTransport(t, n -> n == chunk, corrupt, false) : t)) {
            long destinationFree = destination.frames().freeFrames();
            Workload guest = new Workload(source, PagingMode.NESTED, WRITERS, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            try (guest) {
                guest.start(true, 5);
                guest.awaitWrites(100);
                MigrationException lost = assertThrows(MigrationException.class, () -> Migration.toHost(guest.vm(), destination, link,
                    MigrationConfig.defaults().withBandwidth(64L << 20).withChannels(2)
                        .withStopRules(EnumSet.of(MigrationConfig.StopRule.XEN_MAX_ROUNDS)).withMaxRounds(6), r -> { }, vm -> { }));
                assertTrue(lost.getMessage().contains(corrupt ? "CRC32C" : "lost"), lost.getMessage());
                assertFalse(guest.vm().paused(), "the source runs on");
                assertFalse(guest.vm().dirtyLog().enabled(), "with dirty logging off");
                guest.awaitWrites(100);
                assertEquals(0, destination.vms().size(), "the destination kept nothing");
                assertEquals(destinationFree, destination.frames().freeFrames(), "and gave every frame back");
                guest.stop();
                for (int p = 0; p < PAGES; p++) {
                    assertEquals(guest.expected(p), guest.vm().vcpu(0).readLong(Workload.page(p)));
                }
            }
        }
    }

    @Test
    void channelsRefuseWhatQemuRefusesAndTransportsWithoutThem() {
        IllegalArgumentException xbzrle = assertThrows(IllegalArgumentException.class,
            () -> MigrationConfig.defaults().withXbzrle(1 << 20).withChannels(2));
        assertTrue(xbzrle.getMessage().contains("XBZRLE"), xbzrle.getMessage());
        IllegalArgumentException postcopy = assertThrows(IllegalArgumentException.class,
            () -> MigrationConfig.defaults().withMode(MigrationConfig.Mode.POSTCOPY).withChannels(2));
        assertTrue(postcopy.getMessage().contains("hybrid"), postcopy.getMessage());
        assertThrows(IllegalArgumentException.class, () -> MigrationConfig.defaults().withChannels(0));
        assertThrows(IllegalArgumentException.class, () -> MigrationConfig.defaults().withChannels(MigrationConfig.MAX_CHANNELS + 1));
        try (Host source = Host.create(64L << 20); Host destination = Host.create(64L << 20)) {
            io.vmpage.engine.Vm vm = source.createVm(io.vmpage.engine.VmConfig.of(16L << 20));
            vm.writePhysicalLong(4096, 9);
            MigrationException none = assertThrows(MigrationException.class, () -> Migration.over(vm, destination,
                new FaultyTransport(n -> false, false, false), MigrationConfig.defaults().withChannels(2)));
            assertTrue(none.getMessage().contains("no multifd channels"), none.getMessage());
            assertFalse(vm.paused());
            assertEquals(0, destination.vms().size());
        }
    }

    /** A channel whose destination end takes 2 ms over each chunk. */
    static final class Lagging extends FaultyTransport {
        Lagging(Transport inner) {
            super(inner, n -> false, false, false);
        }

        @Override
        public ByteBuffer receive() {
            java.util.concurrent.locks.LockSupport.parkNanos(2_000_000);
            return super.receive();
        }
    }

    /** A transport whose channels are wrapped (to break one) and whose channels' bytes are counted. */
    static final class Tapped extends FaultyTransport {
        final BiFunction<Integer, Transport, Transport> wrap;
        final Map<Integer, AtomicLong> bytesByChannel = new ConcurrentHashMap<>();
        private final Transport inner;
        private final Map<Integer, Transport> channels = new ConcurrentHashMap<>();

        Tapped(Transport inner, BiFunction<Integer, Transport, Transport> wrap) {
            super(inner, n -> false, false, false);
            this.inner = inner;
            this.wrap = wrap;
        }

        @Override
        public Transport channel(int index) {
            return channels.computeIfAbsent(index, i -> {
                AtomicLong bytes = bytesByChannel.computeIfAbsent(i, k -> new AtomicLong());
                return new FaultyTransport(wrap.apply(i, inner.channel(i)), n -> false, false, false) {
                    @Override
                    public void send(ByteBuffer filled) {
                        bytes.addAndGet(filled.remaining());
                        super.send(filled);
                    }
                };
            });
        }

        @Override
        public void fail(String why) {
            super.fail(why);
            channels.values().forEach(c -> c.fail(why));
        }
    }
}
