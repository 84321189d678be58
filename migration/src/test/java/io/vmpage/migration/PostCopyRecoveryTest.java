package io.vmpage.migration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vm;
import java.util.EnumSet;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * QEMU's postcopy recovery: the connection lost after the switch-over, while pages are still being
 * pushed, leaves the destination's VM running on what it has and the source paused with every frame;
 * a new connection (in memory, or a new TCP connection on loopback) brings the rest, each frame the
 * destination lacked exactly once, and nothing any writer wrote on either side is lost.
 */
class PostCopyRecoveryTest {
    private static final long MEMORY = 32L << 20;
    private static final int PAGES = 256;
    private static final int WRITERS = 2;
    private static final int SMALL_CHUNK = 16 << 10;

    @ParameterizedTest(name = "{0} {1} attached={2} over {3}")
    @CsvSource({"NESTED, POSTCOPY, true, memory", "NESTED, HYBRID, false, tcp", "SHADOW, POSTCOPY, false, tcp",
        "SHADOW, HYBRID, true, memory"})
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void aConnectionLostDuringThePushIsRecoveredOverANewOneWithNothingLost(PagingMode mode, MigrationConfig.Mode algorithm,
                                                                          boolean attached, String fresh) throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            Workload guest = new Workload(source, mode, WRITERS, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            try (guest) {
                guest.start(attached, 41);
                guest.awaitWrites(200);
                java.util.concurrent.atomic.AtomicLong sendsAtSwitch = new java.util.concurrent.atomic.AtomicLong(-1);
                java.util.concurrent.atomic.AtomicLong sends = new java.util.concurrent.atomic.AtomicLong();
                Transport dropping = new FaultyTransport(new MemoryTransport(16, SMALL_CHUNK, 5_000), n -> {
                    sends.set(n);
                    return sendsAtSwitch.get() >= 0 && n == sendsAtSwitch.get() + 8; // eight chunks into the push
                }, false, false);
                PostCopyPausedException paused = assertThrows(PostCopyPausedException.class, () -> Migration.toHost(guest.vm(),
                    destination, dropping, MigrationConfig.defaults().withMode(algorithm).withBandwidth(32L << 20)
                        .withStopRules(EnumSet.of(MigrationConfig.StopRule.XEN_MAX_ROUNDS)).withMaxRounds(2), r -> { },
                    running -> {
                        sendsAtSwitch.set(sends.get());
                        guest.follow(running);
                        guest.vm().retireVcpus();
                    }));
                Vm there = paused.destinationVm();
                assertNotNull(there, "the destination's half");
                assertTrue(paused.destination().framesLeft() > 0, "frames were still on the source");
                assertFalse(there.paused(), "the destination's VM runs on what it has");
                assertTrue(guest.vm().paused(), "the source keeps its copy, paused");
                assertEquals(1, destination.vms().size(), "the destination kept its VM");
                try (Transport link = fresh.equals("tcp") ? TcpTransport.loopback(SMALL_CHUNK, 10_000) : new MemoryTransport()) {
                    Migration.Result result = Migration.recover(paused, link);
                    assertTrue(result.report().verified(), result.report().mismatchedPages() + " pages differ from the paused source");
                    assertTrue(result.destination() == there);
                    assertEquals(guest.vm().populatedFrames(), there.populatedFrames(), "one frame per page: none came twice");
                }
                guest.awaitWrites(100); // the writers carry on on the destination
                guest.stop();
                assertEquals(0, guest.journalMismatches(there), "every write, on either side, is on the destination");
            }
        }
    }

    /**
     * Between two processes' worth of code sharing only a listener: the destination's connection drops in
     * the middle of the push; the source reconnects and recovers, the destination takes the new connection
     * and recovers, replies with its hashes, and the source verifies every page against its paused copy.
     */
    @Test
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void aMigrationBetweenProcessesRecoversOverANewTcpConnection() throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20);
             java.nio.channels.ServerSocketChannel listener = TcpTransport.listen(
                 new java.net.InetSocketAddress(java.net.InetAddress.getLoopbackAddress(), 0))) {
            java.util.concurrent.atomic.AtomicReference<Object> received = new java.util.concurrent.atomic.AtomicReference<>();
            java.util.concurrent.atomic.AtomicBoolean pausedThere = new java.util.concurrent.atomic.AtomicBoolean();
            Thread destinationProcess = new Thread(() -> {
                try (TcpTransport end = TcpTransport.accept(listener, SMALL_CHUNK, 10_000)) {
                    RemoteMigration.receive(destination, end, vm -> new Thread(() -> { // drop the link 20 ms into the push
                        java.util.concurrent.locks.LockSupport.parkNanos(20_000_000);
                        end.fail("link dropped");
                    }).start());
                    received.set("completed without the drop");
                } catch (PostCopyPausedException paused) {
                    pausedThere.set(true);
                    try (TcpTransport again = TcpTransport.accept(listener, SMALL_CHUNK, 10_000)) {
                        received.set(RemoteMigration.recover(paused.destination(), again));
                    } catch (Throwable t) {
                        received.set(t);
                    }
                } catch (Throwable t) {
                    received.set(t);
                }
            });
            destinationProcess.start();
            Workload guest = new Workload(source, PagingMode.NESTED, WRITERS, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            java.net.InetSocketAddress at = (java.net.InetSocketAddress) listener.getLocalAddress();
            try (guest) {
                guest.start(true, 47);
                guest.awaitWrites(200);
                MigrationConfig config = MigrationConfig.defaults().withMode(MigrationConfig.Mode.POSTCOPY).withBandwidth(8L << 20);
                PostCopyPausedException paused;
                try (TcpTransport link = TcpTransport.connect(at, SMALL_CHUNK, 10_000)) {
                    paused = assertThrows(PostCopyPausedException.class, () -> RemoteMigration.send(guest.vm(), link, config, r -> { }));
                }
                assertTrue(guest.vm().paused(), "the source keeps its copy, paused");
                MigrationReport report;
                try (TcpTransport again = TcpTransport.connect(at, SMALL_CHUNK, 10_000)) {
                    report = RemoteMigration.recover(paused, again);
                }
                destinationProcess.join();
                assertTrue(pausedThere.get(), "the destination paused too");
                assertTrue(received.get() instanceof RemoteMigration.Received, String.valueOf(received.get()));
                assertTrue(report.verified(), report.mismatchedPages() + " pages differ from the paused source");
                guest.vm().retireVcpus();
                guest.stop();
                assertEquals(0, guest.journalMismatches(((RemoteMigration.Received) received.get()).vm()));
            }
        }
    }

    /** A recovery whose own connection is lost too pauses again; a third connection completes it. */
    @Test
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void aRecoveryLostAgainIsRecoveredAgain() throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            Workload guest = new Workload(source, PagingMode.NESTED, WRITERS, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            try (guest) {
                guest.start(true, 43);
                guest.awaitWrites(200);
                java.util.concurrent.atomic.AtomicLong sendsAtSwitch = new java.util.concurrent.atomic.AtomicLong(-1);
                java.util.concurrent.atomic.AtomicLong sends = new java.util.concurrent.atomic.AtomicLong();
                Transport dropping = new FaultyTransport(new MemoryTransport(16, SMALL_CHUNK, 5_000), n -> {
                    sends.set(n);
                    return sendsAtSwitch.get() >= 0 && n == sendsAtSwitch.get() + 4;
                }, false, false);
                PostCopyPausedException first = assertThrows(PostCopyPausedException.class, () -> Migration.toHost(guest.vm(),
                    destination, dropping, MigrationConfig.defaults().withMode(MigrationConfig.Mode.POSTCOPY).withBandwidth(32L << 20),
                    r -> { }, running -> {
                        sendsAtSwitch.set(sends.get());
                        guest.follow(running);
                        guest.vm().retireVcpus();
                    }));
                long left = first.destination().framesLeft();
                PostCopyPausedException second = assertThrows(PostCopyPausedException.class, () -> Migration.recover(first,
                    new FaultyTransport(new MemoryTransport(16, SMALL_CHUNK, 5_000), n -> n == 4, false, false)));
                assertTrue(second.destination().framesLeft() <= left && second.destination().framesLeft() > 0,
                    second.destination().framesLeft() + " of " + left + " frames left");
                assertTrue(guest.vm().paused() && !second.destinationVm().paused(), "still the source paused, the destination running");
                Migration.Result result = Migration.recover(second, new MemoryTransport());
                assertTrue(result.report().verified());
                assertEquals(guest.vm().populatedFrames(), result.destination().populatedFrames());
                guest.stop();
                assertEquals(0, guest.journalMismatches(result.destination()));
            }
        }
    }

    /** One side's half (what another process would hold) cannot be recovered in this one. */
    @Test
    void recoveryNeedsBothHalves() {
        IllegalArgumentException half = assertThrows(IllegalArgumentException.class, () -> Migration.recover(
            new PostCopyPausedException("test", null, (Destination.Paused) null), new MemoryTransport()));
        assertTrue(half.getMessage().contains("both halves"), half.getMessage());
    }
}
