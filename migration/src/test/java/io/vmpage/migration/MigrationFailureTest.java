package io.vmpage.migration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vm;
import java.nio.ByteBuffer;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Migrations that fail: the connection lost at each phase, and streams the destination must reject.
 * Before the switch-over the source keeps running with nothing lost and logging off, and the
 * destination keeps nothing.
 */
class MigrationFailureTest {
    private static final long MEMORY = 32L << 20;
    private static final int PAGES = 256;

    /**
     * The connection dropped at setup (the first chunk, with the header), in round 0 (chunk 4), and in
     * a later round (chunk 20: round 0 is about 7 chunks here, each later round about 4, six rounds).
     */
    @ParameterizedTest
    @ValueSource(ints = {1, 4, 20})
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void aDroppedConnectionLeavesTheSourceRunningWithNothingLost(int chunk) throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            long destinationFree = destination.frames().freeFrames();
            Workload guest = new Workload(source, PagingMode.NESTED, 2, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            try (guest) {
                guest.start(true, 5);
                guest.awaitWrites(100);
                MigrationException lost = assertThrows(MigrationException.class, () -> Migration.over(guest.vm(), destination,
                    new FaultyTransport(n -> n == chunk, false, false), MigrationConfig.defaults()
                        .withStopRules(java.util.EnumSet.of(MigrationConfig.StopRule.XEN_MAX_ROUNDS)).withMaxRounds(6)));
                assertTrue(lost.getMessage().contains("lost"), lost.getMessage());
                assertFalse(guest.vm().paused(), "the source runs on");
                assertFalse(guest.vm().dirtyLog().enabled(), "with dirty logging off");
                guest.awaitWrites(100); // the writers never noticed
                assertEquals(0, destination.vms().size(), "the destination kept nothing");
                assertEquals(destinationFree, destination.frames().freeFrames(), "and gave every frame back");
                guest.stop();
                for (int p = 0; p < PAGES; p++) {
                    assertEquals(guest.expected(p), guest.vm().vcpu(0).readLong(Workload.page(p)));
                }
            }
        }
    }

    /**
     * The connection dropped after the source paused for its last round (pre-copy's stop-and-copy,
     * stop-and-copy alone, or hybrid's switch to post-copy), before the destination has everything: the source resumes, unthrottled and
     * logging off, its writers go on, and every value they wrote is in its memory.
     */
    static java.util.stream.Stream<org.junit.jupiter.params.provider.Arguments> pausedModesByValueAndByReference() {
        return java.util.stream.Stream.of(MigrationConfig.Mode.PRECOPY, MigrationConfig.Mode.STOPCOPY, MigrationConfig.Mode.HYBRID)
            .flatMap(m -> java.util.stream.Stream.of(false, true).map(r -> org.junit.jupiter.params.provider.Arguments.of(m, r)));
    }

    @ParameterizedTest
    @org.junit.jupiter.params.provider.MethodSource("pausedModesByValueAndByReference")
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void aConnectionDroppedWhileTheSourceIsPausedResumesItWithNothingLost(MigrationConfig.Mode mode, boolean byReference)
        throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            Workload guest = new Workload(source, PagingMode.NESTED, 2, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            try (guest) {
                guest.start(true, 13);
                guest.awaitWrites(100);
                boolean[] pausedWhenDropped = new boolean[1];
                FaultyTransport link = new FaultyTransport(n -> {
                    pausedWhenDropped[0] = guest.vm().paused();
                    return pausedWhenDropped[0];
                }, false, false);
                MigrationException lost = assertThrows(MigrationException.class, () -> Migration.over(guest.vm(), destination,
                    byReference ? link.offeringMemory() : link, MigrationConfig.defaults().withMode(mode).withBandwidth(256L << 20)));
                assertTrue(pausedWhenDropped[0], "the link dropped during the stop-and-copy");
                assertTrue(lost.getMessage().contains("lost"), lost.getMessage());
                assertFalse(guest.vm().paused(), "the source runs again");
                assertEquals(0, guest.vm().throttlePercent());
                assertFalse(guest.vm().dirtyLog().enabled(), "with dirty logging off");
                guest.awaitWrites(100); // the writers go on where they were
                assertEquals(0, destination.vms().size(), "the destination kept nothing");
                guest.stop();
                assertEquals(0, guest.journalMismatches(guest.vm()), "every write the writers completed is there");
            }
        }
    }

    /** A corrupted chunk or a stream cut before its END: rejected, the partial VM discarded, the source resumed. */
    @ParameterizedTest
    @ValueSource(booleans = {true, false})
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void aCorruptedOrTruncatedStreamIsRejected(boolean corrupt) throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            long destinationFree = destination.frames().freeFrames();
            Workload guest = new Workload(source, PagingMode.SHADOW, 2, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            try (guest) {
                guest.start(false, 9);
                guest.awaitWrites(100);
                Transport faulty = corrupt ? new FaultyTransport(n -> n == 3, true, false) : new FaultyTransport(n -> false, false, true);
                MigrationException rejected = assertThrows(MigrationException.class,
                    () -> Migration.over(guest.vm(), destination, faulty, MigrationConfig.defaults()));
                assertTrue(rejected.getMessage().contains(corrupt ? "corrupt" : "truncated"), rejected.getMessage());
                assertFalse(guest.vm().paused());
                guest.awaitWrites(100);
                assertEquals(0, destination.vms().size());
                assertEquals(destinationFree, destination.frames().freeFrames());
            }
        }
    }

    /**
     * Pages by reference a hostile or broken source may send: over a transport that offers no memory, from a
     * VM of another size, and out of a source VM destroyed before the
     * destination copies them. Each is rejected by name and the partial VM discarded with every frame.
     */
    @Test
    void pagesByReferenceWithoutAnOfferedSourceOrFromAGoneOneAreRejected() {
        MigrationException none = receiveHandMade(b -> {
            header(b, 16L << 20);
            b.put(StreamFormat.PAGE).put(StreamFormat.PAGE_REFERENCE).putLong(3);
        });
        assertTrue(none.getMessage().contains("offers no source memory"), none.getMessage());
        try (Host source = Host.create(64L << 20)) {
            Vm small = source.createVm(io.vmpage.engine.VmConfig.of(8L << 20));
            MigrationException sizes = receiveHandMade(small, b -> {
                header(b, 16L << 20);
                b.put(StreamFormat.PAGE).put(StreamFormat.PAGE_REFERENCE).putLong(3);
            });
            assertTrue(sizes.getMessage().contains("from a VM of 2048 frames into one of 4096"), sizes.getMessage());
            Vm same = source.createVm(io.vmpage.engine.VmConfig.of(16L << 20));
            same.writePhysicalLong(3 << 12, 42);
            Vm big = source.createVm(io.vmpage.engine.VmConfig.of(16L << 20));
            for (long gfn = 0; gfn < 1024; gfn++) {
                big.writePhysicalLong(gfn << 12, gfn + 1);
            }
            source.destroyVm(big); // gone before a batch large enough to be shared is copied out of it
            MigrationException goneLarge = receiveHandMade(big, b -> {
                header(b, 16L << 20);
                for (long gfn = 0; gfn < 1024; gfn++) {
                    b.put(StreamFormat.PAGE).put(StreamFormat.PAGE_REFERENCE).putLong(gfn);
                }
                b.put(StreamFormat.ROUND).putInt(1);
            });
            assertTrue(goneLarge.getMessage().contains("destroyed"), goneLarge.getMessage());
            source.destroyVm(same);
            MigrationException gone = receiveHandMade(same, b -> {
                header(b, 16L << 20);
                b.put(StreamFormat.PAGE).put(StreamFormat.PAGE_REFERENCE).putLong(3);
                b.put(StreamFormat.ROUND).putInt(1); // the pages before a record other than a page are copied first
            });
            assertTrue(gone.getMessage().contains("destroyed"), gone.getMessage());
        }
    }

    private static MigrationException receiveHandMade(java.util.function.Consumer<ByteBuffer> write) {
        return receiveHandMade(null, write);
    }

    /** A hand-made stream over a memory transport that offers {@code offered}'s memory (null: none). */
    private static MigrationException receiveHandMade(Vm offered, java.util.function.Consumer<ByteBuffer> write) {
        try (Host destination = Host.create(64L << 20); MemoryTransport t = new MemoryTransport()) {
            if (offered != null) {
                t.offerMemory(offered);
            }
            long free = destination.frames().freeFrames();
            ByteBuffer b = t.acquire();
            write.accept(b);
            b.flip();
            t.send(b);
            t.finish();
            MigrationException e = assertThrows(MigrationException.class, () -> Destination.receive(destination, t));
            assertEquals(0, destination.vms().size());
            assertEquals(free, destination.frames().freeFrames(), "every frame of the partial VM went back");
            assertNull(t.sharedCopy(), "no copy into the partial VM is left for the source's thread");
            return e;
        }
    }

    @Test
    void wrongMagicWrongVersionAndPagesOutsideTheVmAreRejectedByName() {
        assertTrue(receiveHandMade(b -> b.putInt(0x1234_5678).putLong(0)).getMessage().contains("not a vmpage migration stream"));
        assertTrue(receiveHandMade(b -> b.putInt(StreamFormat.MAGIC).putShort((short) (StreamFormat.VERSION + 1)).putShort((short) 0))
            .getMessage().contains("version " + (StreamFormat.VERSION + 1) + " is not supported"));
        MigrationException outside = receiveHandMade(b -> {
            header(b, 16L << 20);
            b.put(StreamFormat.PAGE).put(StreamFormat.PAGE_ZERO).putLong(1L << 30);
        });
        assertTrue(outside.getMessage().contains("outside the VM"), outside.getMessage());
        MigrationException huge = receiveHandMade(b -> header(b, 1L << 40));
        assertTrue(huge.getMessage().contains("this host has"), huge.getMessage());
        MigrationException cut = receiveHandMade(b -> {
            header(b, 16L << 20);
            b.put(StreamFormat.PAGE).put(StreamFormat.PAGE_FULL).putLong(3).put(new byte[100]);
        });
        assertTrue(cut.getMessage().contains("truncated"), cut.getMessage());
        MigrationException pastThePage = receiveHandMade(b -> {
            header(b, 16L << 20);
            b.put(StreamFormat.PAGE).put(StreamFormat.PAGE_DELTA).putLong(3).putShort((short) 5)
                .put(new byte[] {(byte) 0xff, 0x1f, 2, 9, 9}); // 4095 unchanged, then 2 changed bytes: past the end
        });
        assertTrue(pastThePage.getMessage().contains("XBZRLE delta of guest frame 3"), pastThePage.getMessage());
        MigrationException deltaCut = receiveHandMade(b -> {
            header(b, 16L << 20);
            b.put(StreamFormat.PAGE).put(StreamFormat.PAGE_DELTA).putLong(3).putShort((short) 400).put(new byte[] {0, 4, 1, 2, 3, 4});
        });
        assertTrue(deltaCut.getMessage().contains("XBZRLE delta of guest frame 3"), deltaCut.getMessage());
        MigrationException tableInNested = receiveHandMade(b -> {
            header(b, 16L << 20);
            b.put(StreamFormat.STATE).putInt(1).putLong(0).putLong(0).putLong(0).putLong(0).put((byte) 0);
            b.put(StreamFormat.PVTABLE).putLong(5).put((byte) 4).put((byte) 1).put(new byte[512 * 8]);
        });
        assertTrue(tableInNested.getMessage().contains("paravirtual page table for a NESTED VM"), tableInNested.getMessage());
    }

    private static void header(ByteBuffer b, long memory) {
        b.putInt(StreamFormat.MAGIC).putShort(StreamFormat.VERSION).putShort((short) 0);
        b.putLong(memory).putInt(1).put((byte) 0).put((byte) 4);
        b.putInt(128).putInt(12).putInt(8).putInt(4).put((byte) 1).putInt(32).putInt(64).put((byte) 46);
    }
}
