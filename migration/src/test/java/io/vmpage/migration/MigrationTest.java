package io.vmpage.migration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.dirty.DirtyTracking;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;

/** Live migration between two hosts in one JVM while writer vCPUs keep writing. */
class MigrationTest {
    private static final long MEMORY = 32L << 20;
    private static final int PAGES = 256;
    private static final int WRITERS = 2;

    /** Every paging mode, tracking method and way of driving a vCPU that pre-copy takes. */
    static List<Arguments> combinations() {
        List<Arguments> all = new ArrayList<>();
        for (PagingMode mode : PagingMode.values()) {
            for (DirtyTracking how : DirtyTracking.values()) {
                if (how == DirtyTracking.DIRTY_BITS && mode != PagingMode.NESTED) {
                    continue;
                }
                for (boolean attached : new boolean[] {true, false}) {
                    all.add(Arguments.of(mode, how, attached));
                }
            }
        }
        return all;
    }

    /** The same without paravirtual VMs, which migrate by pre-copy only (as Xen migrates PV guests). */
    static List<Arguments> postCopyCombinations() {
        return combinations().stream().filter(a -> a.get()[0] != PagingMode.PARAVIRTUAL).toList();
    }

    /**
     * The headline: pre-copy while the writers never pause. The destination's memory equals the paused
     * source's page by page, the writers carry on on the destination, and every value a writer completed
     * is there at the end.
     */
    @ParameterizedTest
    @MethodSource("combinations")
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void preCopyUnderRunningWritersLosesNothing(PagingMode mode, DirtyTracking how, boolean attached) throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            Workload guest = new Workload(source, mode, WRITERS, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            try (guest) {
                guest.start(attached, 42);
                guest.awaitWrites(200);
                Migration.Result result = Migration.toHost(guest.vm(), destination,
                    MigrationConfig.defaults().withTracking(how).withBandwidth(256L << 20));
                MigrationReport report = result.report();
                assertTrue(report.verified(), report.mismatchedPages() + " pages differ from the paused source");
                assertNotNull(report.stopReason());
                assertTrue(report.rounds() >= 2, "round 0 and the stop-and-copy at least");
                guest.follow(result.destination());
                source.destroyVm(guest.vm());
                guest.awaitWrites(200); // the writers carry on on the destination
                assertTrue(guest.writesOnFollowedVm() > 0);
                guest.stop();
                assertEquals(0, guest.journalMismatches(result.destination()), "journaled writes missing on the destination");
            }
        }
    }

    /**
     * In one process the pages go by reference (the destination copies each out of the source VM) unless
     * the config says otherwise: the stream then carries page numbers only, not their bytes, and the result
     * is the same, pre-copy under writers that never pause, both ways of driving them, every paging mode.
     * By value, the stream carries every non-zero page whole.
     */
    @ParameterizedTest
    @MethodSource("referenceCombinations")
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void inProcessPagesGoByReferenceUnlessAskedToGoInTheStream(PagingMode mode, boolean attached, boolean references)
        throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            Workload guest = new Workload(source, mode, WRITERS, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            try (guest) {
                guest.start(attached, 17);
                guest.awaitWrites(200);
                java.util.concurrent.atomic.AtomicLong streamBytes = new java.util.concurrent.atomic.AtomicLong();
                FaultyTransport counted = new FaultyTransport(n -> false, false, false) {
                    @Override
                    public void send(java.nio.ByteBuffer filled) {
                        streamBytes.addAndGet(filled.remaining());
                        super.send(filled);
                    }
                }.offeringMemory();
                Migration.Result result = Migration.toHost(guest.vm(), destination, counted,
                    MigrationConfig.defaults().withBandwidth(256L << 20).withPageReferences(references), round -> { }, vm -> { });
                MigrationReport report = result.report();
                assertTrue(report.verified(), report.mismatchedPages() + " pages differ from the paused source");
                long whole = report.pagesSent() - report.zeroPages();
                assertTrue(whole > PAGES, whole + " non-zero pages sent");
                if (references) {
                    assertTrue(streamBytes.get() < report.pagesSent() * 64L + (64L << 10), streamBytes.get()
                        + " stream bytes for " + report.pagesSent() + " pages: their bytes went through the stream");
                } else {
                    assertTrue(streamBytes.get() >= whole * 4096L, streamBytes.get() + " stream bytes for " + whole + " whole pages");
                }
                assertTrue(report.bytesSent() >= whole * 4096L, "bytes sent count what a page by reference moved: "
                    + report.bytesSent());
                assertNull(counted.sharedCopy(), "the destination withdrew its shared copy with the stream");
                guest.follow(result.destination());
                source.destroyVm(guest.vm());
                guest.awaitWrites(200);
                guest.stop();
                assertEquals(0, guest.journalMismatches(result.destination()), "journaled writes missing on the destination");
            }
        }
    }

    static List<Arguments> referenceCombinations() {
        List<Arguments> all = new ArrayList<>();
        for (PagingMode mode : PagingMode.values()) {
            for (boolean attached : new boolean[] {true, false}) {
                all.add(Arguments.of(mode, attached, true));
            }
            all.add(Arguments.of(mode, true, false));
        }
        return all;
    }

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void stopAndCopySendsEveryPopulatedPageOnceAndNothingElse() throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            Workload guest = new Workload(source, PagingMode.NESTED, WRITERS, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            try (guest) {
                guest.populateZeroFrames(16);
                guest.start(true, 7);
                guest.awaitWrites(100);
                long populated = guest.vm().populatedFrames();
                Migration.Result result = Migration.toHost(guest.vm(), destination,
                    MigrationConfig.defaults().withMode(MigrationConfig.Mode.STOPCOPY));
                MigrationReport report = result.report();
                assertTrue(report.verified());
                assertEquals(StopReason.STOP_AND_COPY, report.stopReason());
                assertEquals(1, report.rounds());
                assertEquals(populated, report.pagesSent(), "populated pages only, once each");
                assertEquals(16, report.zeroPages(), "the zero pages go as a flag");
                assertTrue(report.bytesSent() < (populated - report.zeroPages() + 1) * 4200L, "zero pages carry no 4 KiB");
                guest.follow(result.destination());
                source.destroyVm(guest.vm());
                guest.awaitWrites(100);
            }
        }
    }

    @org.junit.jupiter.api.io.TempDir
    java.nio.file.Path swapDir;

    /**
     * Pages the source host swapped out (ESX's host swap) are still the guest's: a migration sends them
     * (swapping them in to read them), in pre-copy and stop-and-copy alike; the destination equals the
     * source at the pause, and the writers' journal holds there.
     */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.CsvSource({"NESTED, PRECOPY", "SHADOW, PRECOPY", "NESTED, STOPCOPY", "SHADOW, STOPCOPY"})
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void pagesOnTheSourcesSwapMigrateWithTheRest(PagingMode mode, MigrationConfig.Mode how) throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            source.attachSwap(io.vmpage.engine.swap.SwapDevice.create(swapDir.resolve("swap-" + mode + how), 8192));
            Workload guest = new Workload(source, mode, WRITERS, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            try (guest) {
                guest.start(true, 11);
                guest.awaitWrites(100);
                long swapped = 0;
                for (long gfn = 0; gfn < guest.vm().physicalMap().frames(); gfn++) { // every populated page, while the writers write
                    if (guest.vm().physicalMap().machineFrame(gfn) >= 0 && guest.vm().swapOut(gfn)) {
                        swapped++;
                    }
                }
                // Pages the writers keep writing mostly refuse (a store came during the swap-out) or come back
                // at once; the guest kernel's page tables, which they never write, stay out.
                assertTrue(swapped > 0 && guest.vm().swappedFrames() > 0, swapped + " pages swapped out, "
                    + guest.vm().swappedFrames() + " still out");
                Migration.Result result = Migration.toHost(guest.vm(), destination, MigrationConfig.defaults().withMode(how));
                MigrationReport report = result.report();
                assertTrue(report.verified(), "mismatched pages: " + report.mismatchedPages());
                assertEquals(0, report.mismatchedPages());
                guest.follow(result.destination());
                source.destroyVm(guest.vm());
                guest.awaitWrites(100);
                assertEquals(0, source.swap().usedSlots(), "the source's swap is empty once its VM is gone");
            }
        }
    }

    /**
     * XBZRLE as QEMU runs it, page by page: round 0 caches nothing; a page re-sent the first time is a
     * cache miss and goes whole; re-sent again, it goes as a delta of its changed bytes; dirtied but
     * unchanged, it is not sent. The writes come from the progress callback, which runs between rounds:
     * a write after round r's harvest is found by the next one and sent in round r + 2, reading the
     * page as round r + 1's write left it. So round 2 reads the second value (a miss), round 3 the third
     * (a delta against the second), and the stop-and-copy the third again (unchanged).
     */
    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void xbzrleSendsAReSentPageWholeOnceThenAsADeltaAndSkipsAnUnchangedOne(PagingMode mode) {
        try (Host source = Host.create(64L << 20); Host destination = Host.create(64L << 20)) {
            Vm vm = source.createVm(VmConfig.of(16L << 20).withPaging(mode));
            int pages = 10;
            for (int p = 0; p < 64; p++) {
                vm.writePhysicalLong(p * 4096L + 8, p + 1);
            }
            java.util.function.Consumer<MigrationReport.Round> writes = round -> {
                if (round.round() <= 2) {
                    long value = 0x1111L * (round.round() + 1);
                    for (int p = 0; p < pages; p++) {
                        vm.writePhysicalLong(p * 4096L + 512, value);
                    }
                }
            };
            Migration.Result result = Migration.toHost(vm, destination, MigrationConfig.defaults()
                .withStopRules(EnumSet.of(MigrationConfig.StopRule.XEN_MAX_ROUNDS)).withMaxRounds(4)
                .withXbzrle(MigrationConfig.XBZRLE_DEFAULT_CACHE), writes);
            MigrationReport report = result.report();
            assertTrue(report.verified(), report.mismatchedPages() + " pages differ");
            MigrationReport.Xbzrle x = report.xbzrle();
            assertNotNull(x);
            assertEquals(pages, x.cacheMisses(), "round 2: first re-send, not cached by round 0");
            assertEquals(pages, x.pages(), "round 3: sent as deltas");
            assertEquals(pages, x.unchanged(), "stop-and-copy: dirtied, unchanged, not sent");
            assertEquals(0, x.overflows());
            assertTrue(x.bytes() <= pages * 12L, x.bytes() + " bytes for " + pages + " eight-byte changes");
            List<Long> perRound = report.perRound().stream().map(MigrationReport.Round::pagesSent).toList();
            assertEquals(List.of(64L, 0L, (long) pages, (long) pages, 0L), perRound);
            assertEquals(0x3333, result.destination().readPhysicalLong(512));
            source.destroyVm(vm);
        }
    }

    /** XBZRLE under writers that never pause: every mode and method, nothing lost, deltas far smaller than pages. */
    @ParameterizedTest
    @MethodSource("combinations")
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void xbzrleUnderRunningWritersLosesNothing(PagingMode mode, DirtyTracking how, boolean attached) throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            // About 1,000 writes per second over 64 hot pages, an 8 MiB/s link: a page re-sent has a few new words.
            Workload guest = new Workload(source, mode, WRITERS, MEMORY, PAGES, Workload.Pattern.HOTSET, 64, 4L << 20);
            try (guest) {
                guest.start(attached, 11);
                guest.awaitWrites(50);
                Migration.Result result = Migration.toHost(guest.vm(), destination, MigrationConfig.defaults().withTracking(how)
                    .withBandwidth(8L << 20)
                    .withStopRules(EnumSet.of(MigrationConfig.StopRule.XEN_MAX_ROUNDS)).withMaxRounds(6)
                    .withXbzrle(1L << 20));
                MigrationReport report = result.report();
                assertTrue(report.verified(), report.mismatchedPages() + " pages differ from the paused source");
                MigrationReport.Xbzrle x = report.xbzrle();
                assertTrue(x.pages() > 0, "hot pages re-sent more than once go as deltas: " + x);
                assertTrue(x.encodingRate() > 8, "a few changed words per page: " + x.encodingRate());
                guest.follow(result.destination());
                source.destroyVm(guest.vm());
                guest.awaitWrites(50);
                guest.stop();
                assertEquals(0, guest.journalMismatches(result.destination()), "journaled writes missing on the destination");
            }
        }
    }

    /** Xen's rules end pre-copy by themselves, and say which one did. */
    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void xenRoundCapEndsPreCopyAndIsReported() throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            Workload guest = new Workload(source, PagingMode.NESTED, WRITERS, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            try (guest) {
                guest.start(true, 3);
                guest.awaitWrites(100);
                Migration.Result result = Migration.toHost(guest.vm(), destination, MigrationConfig.defaults()
                    .withStopRules(EnumSet.of(MigrationConfig.StopRule.XEN_MAX_ROUNDS)).withMaxRounds(3));
                assertEquals(StopReason.MAX_ROUNDS, result.report().stopReason());
                assertEquals(4, result.report().rounds(), "three pre-copy rounds and the stop-and-copy");
                assertTrue(result.report().verified());
                guest.follow(result.destination());
                source.destroyVm(guest.vm());
            }
        }
    }

    @ParameterizedTest
    @EnumSource(value = MigrationConfig.Mode.class, names = {"POSTCOPY", "HYBRID"})
    void paravirtualVmsAreRefusedPostCopyClearly(MigrationConfig.Mode mode) {
        try (Host source = Host.create(64L << 20); Host destination = Host.create(64L << 20)) {
            Vm pv = source.createVm(VmConfig.of(16L << 20).withPaging(PagingMode.PARAVIRTUAL));
            MigrationException refused = assertThrows(MigrationException.class,
                () -> Migration.toHost(pv, destination, MigrationConfig.defaults().withMode(mode)));
            assertTrue(refused.getMessage().contains("PARAVIRTUAL") && refused.getMessage().contains("pre-copy"), refused.getMessage());
            assertFalse(pv.paused());
            assertEquals(0, destination.vms().size());
        }
    }

    /**
     * Xen's PV save/restore through a stream: the page tables travel canonicalized to guest frames, the
     * destination rebuilds them on its own machine frames and re-pins them, and its vCPUs run the guest
     * through them. A stop-and-copy of a guest with its writers running.
     */
    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void aParavirtualGuestRunsOnTheDestinationThroughItsRestoredTables() throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            Workload guest = new Workload(source, PagingMode.PARAVIRTUAL, WRITERS, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            try (guest) {
                guest.start(true, 23);
                guest.awaitWrites(200);
                Migration.Result result = Migration.toHost(guest.vm(), destination,
                    MigrationConfig.defaults().withMode(MigrationConfig.Mode.STOPCOPY));
                assertTrue(result.report().verified(), result.report().mismatchedPages() + " pages differ");
                Vm there = result.destination();
                there.pause();
                long pinned = there.exportState().pvTables().stream().filter(io.vmpage.engine.PvTable::pinned).count();
                assertTrue(pinned >= 1, "the guest's L4s are pinned again on the destination");
                there.resume();
                guest.follow(there);
                source.destroyVm(guest.vm());
                guest.awaitWrites(200);
                assertTrue(guest.writesOnFollowedVm() > 0, "the writers run on the destination");
                guest.stop();
                assertEquals(0, guest.journalMismatches(there));
            }
        }
    }

    /**
     * Physics: a hot set much smaller than what the link carries in one downtime limit converges by
     * QEMU's rule in a few rounds, as predicted beforehand, with a downtime near the last pages over the
     * bandwidth plus a small fixed cost.
     */
    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void aSmallHotSetConvergesUnderTheDowntimeLimitAsPredicted() throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            Workload guest = new Workload(source, PagingMode.NESTED, WRITERS, 40L << 20, 2048, Workload.Pattern.HOTSET, 256, 0);
            try (guest) {
                guest.start(true, 13);
                guest.awaitWrites(100);
                long bandwidth = 32L << 20;
                long limit = 300_000_000L;
                DirtyRate rate = DirtyRate.measure(guest.vm(), DirtyTracking.WRITE_PROTECT, limit);
                assertTrue(rate.pages() <= 256 + 64, "the hot set bounds what gets dirty: " + rate);
                assertTrue(rate.predictsConvergence(bandwidth, limit));
                Migration.Result result = Migration.toHost(guest.vm(), destination,
                    MigrationConfig.defaults().withBandwidth(bandwidth).withDowntimeLimit(limit));
                MigrationReport report = result.report();
                assertEquals(StopReason.DOWNTIME_LIMIT, report.stopReason());
                assertTrue(report.rounds() <= 4, report.rounds() + " rounds");
                assertTrue(report.verified());
                long lastPages = report.perRound().get(report.rounds() - 1).pagesSent();
                double expectedMs = lastPages * 4096.0 / bandwidth * 1e3;
                assertTrue(report.downtimeNanos() / 1e6 < expectedMs + 150, "downtime " + report.downtimeNanos() / 1e6
                    + " ms for " + lastPages + " pages (" + expectedMs + " ms on the link)");
                guest.follow(result.destination());
                source.destroyVm(guest.vm());
            }
        }
    }

    /** Physics: a guest dirtying faster than the link never gets under the limit; only the round cap ends it. */
    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void aDirtyRateAboveTheBandwidthDoesNotConvergeAsPredicted() throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            Workload guest = new Workload(source, PagingMode.NESTED, WRITERS, 40L << 20, 2048, Workload.Pattern.UNIFORM, 2048, 0);
            try (guest) {
                guest.start(true, 17);
                guest.awaitWrites(100);
                long bandwidth = 32L << 20;
                long limit = 50_000_000L;
                DirtyRate rate = DirtyRate.measure(guest.vm(), DirtyTracking.WRITE_PROTECT, 100_000_000L);
                assertTrue(!rate.predictsConvergence(bandwidth, limit), "predicted not to converge: " + rate);
                Migration.Result result = Migration.toHost(guest.vm(), destination, MigrationConfig.defaults()
                    .withBandwidth(bandwidth).withDowntimeLimit(limit).withMaxRounds(4));
                assertEquals(StopReason.MAX_ROUNDS, result.report().stopReason());
                assertTrue(result.report().verified());
                guest.follow(result.destination());
                source.destroyVm(guest.vm());
            }
        }
    }

    /** Every write pattern migrates without losing a write. */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.EnumSource(Workload.Pattern.class)
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void everyWritePatternMigrates(Workload.Pattern pattern) throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            Workload guest = new Workload(source, PagingMode.SHADOW, WRITERS, MEMORY, PAGES, pattern, 64, 4L << 20);
            try (guest) {
                guest.start(false, 23);
                guest.awaitWrites(50);
                Migration.Result result = Migration.toHost(guest.vm(), destination, MigrationConfig.defaults());
                assertTrue(result.report().verified());
                guest.follow(result.destination());
                source.destroyVm(guest.vm());
                guest.awaitWrites(50);
                guest.stop();
                assertEquals(0, guest.journalMismatches(result.destination()));
            }
        }
    }

    /**
     * Auto-converge: the guest that dirties twice what the link carries (paced, CPU-bound writers) does
     * not converge by itself, and does once QEMU's throttle holds its vCPUs back.
     */
    @Test
    @Timeout(value = 90, unit = TimeUnit.SECONDS)
    void autoConvergeThrottlesAGuestThatDirtiesFasterThanTheLinkUntilItConverges() throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            long bandwidth = 16L << 20;
            Workload guest = new Workload(source, PagingMode.NESTED, WRITERS, 40L << 20, 2048, Workload.Pattern.UNIFORM, 2048,
                2 * bandwidth);
            try (guest) {
                guest.start(true, 19);
                guest.awaitWrites(100);
                MigrationConfig config = MigrationConfig.defaults().withBandwidth(bandwidth).withDowntimeLimit(50_000_000L)
                    .withMaxRounds(40);
                Migration.Result result = Migration.toHost(guest.vm(), destination, config.withAutoConverge(true));
                MigrationReport report = result.report();
                assertEquals(StopReason.DOWNTIME_LIMIT, report.stopReason(), report.rounds() + " rounds, throttle "
                    + report.throttlePercent() + "%");
                assertTrue(report.throttlePercent() >= 20, "throttled: " + report.throttlePercent());
                assertTrue(report.verified());
                assertEquals(0, guest.vm().throttlePercent(), "the source is not left throttled");
                guest.follow(result.destination());
                source.destroyVm(guest.vm());
                guest.awaitWrites(50);
            }
        }
    }

    /**
     * Post-copy: the VM runs on the destination at once; the writers' first touches of pages not sent yet
     * fault, are pulled over the return path, and every page crosses exactly once. What the destination
     * did not write since equals the paused source, and every journaled write is there at the end.
     */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void postCopyMovesTheVmAtOnceAndEveryPageCrossesExactlyOnce(PagingMode mode) throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            Workload guest = new Workload(source, mode, WRITERS, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            try (guest) {
                guest.start(true, 29);
                guest.awaitWrites(200);
                Migration.Result result = Migration.toHost(guest.vm(), destination,
                    MigrationConfig.defaults().withMode(MigrationConfig.Mode.POSTCOPY).withBandwidth(16L << 20), round -> { },
                    running -> {
                        guest.follow(running);
                        guest.vm().retireVcpus(); // the writers leave the paused source for the destination
                    });
                MigrationReport report = result.report();
                assertEquals(StopReason.POST_COPY, report.stopReason());
                assertTrue(report.verified(), report.mismatchedPages() + " pages differ");
                MigrationReport.PostCopy pc = report.postCopy();
                assertNotNull(pc);
                assertEquals(guest.vm().populatedFrames(), pc.pagesPushed(), "every populated page, once");
                assertEquals(pc.pagesPushed(), report.pagesSent());
                assertTrue(pc.faults() > 0, "the writers pulled pages they touched first");
                assertTrue(guest.writesOnFollowedVm() > 0, "the writers ran on the destination while pages arrived");
                assertTrue(report.downtimeNanos() < 1_000_000_000L, "the switch-over carries no pages");
                guest.awaitWrites(100);
                guest.stop();
                assertEquals(0, guest.journalMismatches(result.destination()));
                source.destroyVm(guest.vm());
            }
        }
    }

    /**
     * Hybrid: pre-copy rounds, then post-copy for what the guest wrote since it was sent. The
     * destination drops its stale copies of those pages before it first runs, each of them crosses once
     * more after the switch-over (pulled by a writer's touch or pushed), and nothing a writer wrote is
     * lost, in both paging modes and both ways of driving a vCPU.
     */
    @ParameterizedTest
    @MethodSource("postCopyCombinations")
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void hybridPreCopiesThenPullsOnlyWhatWasWrittenAgain(PagingMode mode, DirtyTracking how, boolean attached) throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            Workload guest = new Workload(source, mode, WRITERS, MEMORY, PAGES, Workload.Pattern.HOTSET, 64, 0);
            try (guest) {
                guest.start(attached, 31);
                guest.awaitWrites(200);
                long destinationFree = destination.frames().freeFrames();
                Migration.Result result = Migration.toHost(guest.vm(), destination, MigrationConfig.defaults()
                        .withMode(MigrationConfig.Mode.HYBRID).withTracking(how).withBandwidth(8L << 20)
                        .withStopRules(EnumSet.of(MigrationConfig.StopRule.XEN_MAX_ROUNDS)).withMaxRounds(3), round -> { },
                    running -> {
                        guest.follow(running);
                        guest.vm().retireVcpus();
                    });
                MigrationReport report = result.report();
                assertEquals(MigrationConfig.Mode.HYBRID, report.mode());
                assertEquals(StopReason.MAX_ROUNDS, report.stopReason(), "the pre-copy rule that started the post-copy");
                assertEquals(4, report.rounds(), "three pre-copy rounds and the post-copy push");
                assertTrue(report.verified(), report.mismatchedPages() + " pages differ");
                MigrationReport.PostCopy pc = report.postCopy();
                assertNotNull(pc);
                MigrationReport.Round push = report.perRound().get(3);
                assertTrue(push.sourcePaused());
                assertEquals(push.pagesSent(), pc.pagesPushed(), "the pages left, each once after the switch-over");
                assertTrue(pc.pagesPushed() > 0 && pc.pagesPushed() <= 64 + 16, "the hot set and what the kernel wrote, not all "
                    + guest.vm().populatedFrames() + " populated pages: " + pc.pagesPushed());
                guest.awaitWrites(100);
                guest.stop();
                assertEquals(0, guest.journalMismatches(result.destination()));
                assertEquals(guest.vm().populatedFrames(), result.destination().populatedFrames(),
                    "one frame per populated page: each stale copy was dropped, its replacement fetched");
                source.destroyVm(guest.vm());
                destination.destroyVm(result.destination());
                assertEquals(destinationFree, destination.frames().freeFrames(), "no frame leaked on the destination");
            }
        }
    }

    @Test
    void retiredSourceVcpusFailButTheMemoryStaysReadable() throws Exception {
        try (Host source = Host.create(96L << 20)) {
            Workload guest = new Workload(source, PagingMode.NESTED, WRITERS, MEMORY, PAGES, Workload.Pattern.UNIFORM, PAGES, 0);
            guest.vm().pause();
            guest.vm().retireVcpus();
            assertThrows(IllegalStateException.class, () -> guest.vm().vcpu(0).readLong(Workload.page(0)));
            byte[] page = new byte[4096];
            org.junit.jupiter.api.Assertions.assertDoesNotThrow(() -> guest.vm().readPhysical(0, page, 0, page.length),
                "host reads of the memory still work");
            source.destroyVm(guest.vm());
        }
    }
}
