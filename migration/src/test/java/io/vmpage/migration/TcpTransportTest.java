package io.vmpage.migration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import java.io.DataOutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.channels.ServerSocketChannel;
import java.net.Socket;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Migrations over a TCP connection on loopback, and a TCP destination fed broken or hostile streams. */
class TcpTransportTest {
    private static final long MEMORY = 32L << 20;
    private static final int PAGES = 256;
    private static final int WRITERS = 2;
    private static final int CHUNK = MemoryTransport.DEFAULT_CHUNK;

    @ParameterizedTest
    @CsvSource({"NESTED, PRECOPY", "SHADOW, PRECOPY", "NESTED, STOPCOPY", "NESTED, POSTCOPY", "SHADOW, POSTCOPY"})
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void aMigrationOverTcpUnderRunningWritersLosesNothing(PagingMode paging, MigrationConfig.Mode mode) throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20);
             Transport link = TcpTransport.loopback(CHUNK, 10_000)) {
            Workload guest = new Workload(source, paging, WRITERS, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            try (guest) {
                guest.start(true, 5);
                guest.awaitWrites(200);
                Migration.Result result = Migration.toHost(guest.vm(), destination, link,
                    MigrationConfig.defaults().withMode(mode).withBandwidth(256L << 20), round -> { }, running -> {
                        guest.follow(running);
                        guest.vm().retireVcpus();
                    });
                MigrationReport report = result.report();
                assertTrue(report.verified(), report.mismatchedPages() + " pages differ from the paused source");
                if (mode == MigrationConfig.Mode.POSTCOPY) {
                    assertEquals(report.postCopy().pagesPushed(), report.pagesSent(), "every page crossed once");
                }
                guest.awaitWrites(200); // the writers carry on on the destination
                assertTrue(guest.writesOnFollowedVm() > 0);
                guest.stop();
                assertEquals(0, guest.journalMismatches(result.destination()), "journaled writes missing on the destination");
                source.destroyVm(guest.vm());
            }
        }
    }

    /**
     * The link breaks half-way through pre-copy (both sockets closed): the source fails with a clear
     * error and its VM keeps running unpaused, dirty logging off, the writers going on; the destination
     * discards what it built.
     */
    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void aConnectionDroppedMidStreamLeavesTheSourceRunningAndTheDestinationEmpty() throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20);
             Transport dropping = new FaultyTransport(TcpTransport.loopback(CHUNK, 5_000), n -> n == 3, false, false)) {
            Workload guest = new Workload(source, PagingMode.NESTED, WRITERS, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            try (guest) {
                guest.start(true, 9);
                guest.awaitWrites(100);
                MigrationException e = assertThrows(MigrationException.class, () -> Migration.toHost(guest.vm(), destination,
                    dropping, MigrationConfig.defaults().withBandwidth(64L << 20), round -> { }, running -> { }));
                assertTrue(e.getMessage().contains("connection lost"), e.getMessage());
                assertTrue(destination.vms().isEmpty(), "the destination keeps nothing of a broken stream");
                assertFalse(guest.vm().paused());
                assertNull(guest.vm().dirtyLog().method(), "dirty logging is off again");
                guest.awaitWrites(100); // the guest runs on at the source
            }
        }
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
        "2147483647|a chunk of 2147483647 bytes",
        "100|closed the connection before the end of the stream"})
    @Timeout(value = 30, unit = TimeUnit.SECONDS)
    void aDestinationRejectsAHostileOrTruncatedTcpStreamClearly(int length, String named) throws Exception {
        try (Host destination = Host.create(64L << 20);
             ServerSocketChannel listener = TcpTransport.listen(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            AtomicReference<Throwable> rejected = new AtomicReference<>();
            Thread receiver = new Thread(() -> {
                try (TcpTransport end = TcpTransport.accept(listener, CHUNK, 5_000)) {
                    Destination.receive(destination, end);
                } catch (Throwable t) {
                    rejected.set(t);
                }
            });
            receiver.start();
            try (Socket peer = new Socket()) {
                peer.connect(listener.getLocalAddress());
                DataOutputStream out = new DataOutputStream(peer.getOutputStream());
                out.writeInt(length);
                out.write(new byte[10]); // fewer bytes than announced, then the peer goes away
                out.flush();
            }
            receiver.join();
            assertTrue(rejected.get() instanceof MigrationException, String.valueOf(rejected.get()));
            assertTrue(rejected.get().getMessage().contains(named), rejected.get().getMessage());
            assertTrue(destination.vms().isEmpty());
        }
    }

    @Test
    void eachEndRefusesTheOtherSidesCalls() throws Exception {
        try (Transport link = TcpTransport.loopback(CHUNK, 5_000);
             ServerSocketChannel listener = TcpTransport.listen(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            assertTrue(link.pollRequest() < 0);
            try (TcpTransport sourceEnd = TcpTransport.connect((InetSocketAddress) listener.getLocalAddress(), CHUNK, 5_000)) {
                IllegalStateException e = assertThrows(IllegalStateException.class, sourceEnd::receive);
                assertTrue(e.getMessage().contains("destination end"), e.getMessage());
            }
        }
        MigrationException refused = assertThrows(MigrationException.class, () -> {
            try (ServerSocket closed = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
                InetSocketAddress gone = (InetSocketAddress) closed.getLocalSocketAddress();
                closed.close();
                TcpTransport.connect(gone, CHUNK, 2_000);
            }
        });
        assertTrue(refused.getMessage().contains("cannot connect to the destination"), refused.getMessage());
    }

    /** The source's write deadline: a destination that accepts and then takes nothing fails the send, clearly. */
    @Test
    @Timeout(value = 30, unit = TimeUnit.SECONDS)
    void aDestinationThatStopsReadingFailsTheSourceWithinTheStallTimeout() throws Exception {
        try (ServerSocketChannel listener = TcpTransport.listen(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
             TcpTransport sourceEnd = TcpTransport.connect((InetSocketAddress) listener.getLocalAddress(), CHUNK, 500);
             java.nio.channels.SocketChannel silent = listener.accept()) {
            long start = System.nanoTime();
            MigrationException stalled = assertThrows(MigrationException.class, () -> {
                while (true) { // the socket buffers fill up, then nothing moves
                    java.nio.ByteBuffer b = sourceEnd.acquire();
                    b.position(b.limit()).flip();
                    sourceEnd.send(b);
                }
            });
            assertTrue(stalled.getMessage().contains("stalled: the peer took nothing for 500 ms"), stalled.getMessage());
            assertTrue(System.nanoTime() - start < 10_000_000_000L);
            assertTrue(silent.isOpen());
        }
    }

    /** A source that connects and then says nothing: the destination gives up after the stall timeout. */
    @Test
    @Timeout(value = 30, unit = TimeUnit.SECONDS)
    void aSourceThatSendsNothingFailsTheDestinationWithinTheStallTimeout() throws Exception {
        try (ServerSocketChannel listener = TcpTransport.listen(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
             Socket quiet = new Socket()) {
            quiet.connect(listener.getLocalAddress());
            try (TcpTransport destinationEnd = TcpTransport.accept(listener, CHUNK, 300)) {
                MigrationException stalled = assertThrows(MigrationException.class, destinationEnd::receive);
                assertTrue(stalled.getMessage().contains("stalled: the source sent nothing for 300 ms"), stalled.getMessage());
            }
        }
    }

    /**
     * Two processes' worth of migration over one TCP connection, nothing shared but the socket: the
     * destination replies with its page hashes and the source verifies them against its paused copy; the
     * destination's VM runs, and every write the source's writers completed is in the source's copy.
     */
    @ParameterizedTest
    @CsvSource({"NESTED, PRECOPY", "SHADOW, PRECOPY", "NESTED, POSTCOPY", "SHADOW, HYBRID", "PARAVIRTUAL, PRECOPY"})
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void aMigrationToAnotherProcessIsVerifiedFromTheDestinationsHashes(PagingMode paging, MigrationConfig.Mode mode) throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20);
             ServerSocketChannel listener = TcpTransport.listen(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            AtomicReference<Object> received = new AtomicReference<>();
            java.util.concurrent.atomic.AtomicLong writesThere = new java.util.concurrent.atomic.AtomicLong();
            Thread destinationProcess = new Thread(() -> {
                try (TcpTransport end = TcpTransport.accept(listener, CHUNK, 10_000)) {
                    RemoteMigration.Received r = RemoteMigration.receive(destination, end, vm -> { });
                    io.vmpage.engine.Vcpu cpu = r.vm().vcpu(0);
                    for (int i = 0; i < 1000; i++) { // the VM runs there: its vCPU writes through the migrated tables
                        cpu.writeLong(Workload.page(0) + 16, i);
                        writesThere.incrementAndGet();
                    }
                    received.set(r);
                } catch (Throwable t) {
                    received.set(t);
                }
            });
            destinationProcess.start();
            Workload guest = new Workload(source, paging, WRITERS, MEMORY, PAGES, Workload.Pattern.HOTSET, 64, 0);
            try (guest; TcpTransport link = TcpTransport.connect((InetSocketAddress) listener.getLocalAddress(), CHUNK, 10_000)) {
                guest.start(true, 17);
                guest.awaitWrites(200);
                MigrationReport report = RemoteMigration.send(guest.vm(), link, MigrationConfig.defaults().withMode(mode)
                    .withBandwidth(64L << 20).withStopRules(java.util.EnumSet.of(MigrationConfig.StopRule.XEN_MAX_ROUNDS))
                    .withMaxRounds(3), round -> { });
                destinationProcess.join();
                assertTrue(received.get() instanceof RemoteMigration.Received, String.valueOf(received.get()));
                assertTrue(report.verified(), report.mismatchedPages() + " pages differ from the paused source");
                assertTrue(report.downtimeNanos() > 0);
                assertEquals(mode == MigrationConfig.Mode.PRECOPY, report.postCopy() == null);
                assertEquals(1000, writesThere.get());
                guest.vm().retireVcpus(); // the source's writers write no more
                guest.stop();
                RemoteMigration.Received r = (RemoteMigration.Received) received.get();
                assertEquals(0, guest.journalMismatches(r.vm()), "every write completed at the source is on the destination");
                assertEquals(999, r.vm().vcpu(0).readLong(Workload.page(0) + 16));
            }
        }
    }

    /** The check can fail: a destination whose hashes do not match has every such page counted. */
    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void hashesThatDoNotMatchTheSourceAreCountedAsMismatchedPages() throws Exception {
        try (Host source = Host.create(64L << 20); Host destination = Host.create(64L << 20);
             ServerSocketChannel listener = TcpTransport.listen(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            io.vmpage.engine.Vm vm = source.createVm(io.vmpage.engine.VmConfig.of(16L << 20));
            for (int p = 0; p < 10; p++) {
                vm.writePhysicalLong(p * 4096L, p + 1);
            }
            long frames = vm.physicalMap().frames();
            Thread liar = new Thread(() -> {
                try (TcpTransport end = TcpTransport.accept(listener, CHUNK, 10_000)) {
                    Destination.receive(destination, end);
                    long[] reply = new long[8 + (int) frames + (int) ((frames + 63) / 64)];
                    reply[2] = frames;
                    for (int i = 0; i < frames; i++) {
                        reply[8 + i] = PageScan.hash(new byte[4096], 0); // every page claimed zero
                    }
                    end.reply(reply);
                } catch (RuntimeException e) {
                    throw e;
                }
            });
            liar.start();
            try (TcpTransport link = TcpTransport.connect((InetSocketAddress) listener.getLocalAddress(), CHUNK, 10_000)) {
                MigrationReport report = RemoteMigration.send(vm, link, MigrationConfig.defaults()
                    .withMode(MigrationConfig.Mode.STOPCOPY), round -> { });
                assertFalse(report.verified());
                assertEquals(10, report.mismatchedPages(), "the ten written pages are not zero");
            }
            liar.join();
        }
    }
}
