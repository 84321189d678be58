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
             ServerSocket listener = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
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
                peer.connect(listener.getLocalSocketAddress());
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
             ServerSocket listener = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            assertTrue(link.pollRequest() < 0);
            try (TcpTransport sourceEnd = TcpTransport.connect((InetSocketAddress) listener.getLocalSocketAddress(), CHUNK, 5_000)) {
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
}
