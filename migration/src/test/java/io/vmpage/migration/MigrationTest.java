package io.vmpage.migration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
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
import org.junit.jupiter.params.provider.MethodSource;

/** Live migration between two hosts in one JVM while writer vCPUs keep writing. */
class MigrationTest {
    private static final long MEMORY = 32L << 20;
    private static final int PAGES = 256;
    private static final int WRITERS = 2;

    static List<Arguments> combinations() {
        List<Arguments> all = new ArrayList<>();
        for (PagingMode mode : new PagingMode[] {PagingMode.NESTED, PagingMode.SHADOW}) {
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
            WrittenGuest guest = new WrittenGuest(source, mode, WRITERS, PAGES, MEMORY);
            try (guest) {
                guest.start(attached, 42);
                guest.awaitWrites(200);
                Migration.Result result = Migration.toHost(guest.vm, destination,
                    MigrationConfig.defaults().withTracking(how).withBandwidth(256L << 20));
                MigrationReport report = result.report();
                assertTrue(report.verified(), report.mismatchedPages() + " pages differ from the paused source");
                assertNotNull(report.stopReason());
                assertTrue(report.rounds() >= 2, "round 0 and the stop-and-copy at least");
                guest.follow(result.destination());
                source.destroyVm(guest.vm);
                guest.awaitWrites(200); // the writers carry on on the destination
                assertTrue(guest.writesOnFollowedVm() > 0);
                guest.stop();
                Vcpu reader = result.destination().vcpu(0);
                for (int p = 0; p < PAGES; p++) {
                    assertEquals(guest.expected(p), reader.readLong(WrittenGuest.page(p)), "page " + p);
                }
            }
        }
    }

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void stopAndCopySendsEveryPopulatedPageOnceAndNothingElse() throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            WrittenGuest guest = new WrittenGuest(source, PagingMode.NESTED, WRITERS, PAGES, MEMORY);
            try (guest) {
                guest.populateZeroFrames(16);
                guest.start(true, 7);
                guest.awaitWrites(100);
                long populated = guest.vm.populatedFrames();
                Migration.Result result = Migration.toHost(guest.vm, destination,
                    MigrationConfig.defaults().withMode(MigrationConfig.Mode.STOPCOPY));
                MigrationReport report = result.report();
                assertTrue(report.verified());
                assertEquals(StopReason.STOP_AND_COPY, report.stopReason());
                assertEquals(1, report.rounds());
                assertEquals(populated, report.pagesSent(), "populated pages only, once each");
                assertEquals(16, report.zeroPages(), "the zero pages go as a flag");
                assertTrue(report.bytesSent() < (populated - report.zeroPages() + 1) * 4200L, "zero pages carry no 4 KiB");
                guest.follow(result.destination());
                source.destroyVm(guest.vm);
                guest.awaitWrites(100);
            }
        }
    }

    /** Xen's rules end pre-copy by themselves, and say which one did. */
    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void xenRoundCapEndsPreCopyAndIsReported() throws Exception {
        try (Host source = Host.create(96L << 20); Host destination = Host.create(96L << 20)) {
            WrittenGuest guest = new WrittenGuest(source, PagingMode.NESTED, WRITERS, PAGES, MEMORY);
            try (guest) {
                guest.start(true, 3);
                guest.awaitWrites(100);
                Migration.Result result = Migration.toHost(guest.vm, destination, MigrationConfig.defaults()
                    .withStopRules(EnumSet.of(MigrationConfig.StopRule.XEN_MAX_ROUNDS)).withMaxRounds(3));
                assertEquals(StopReason.MAX_ROUNDS, result.report().stopReason());
                assertEquals(4, result.report().rounds(), "three pre-copy rounds and the stop-and-copy");
                assertTrue(result.report().verified());
                guest.follow(result.destination());
                source.destroyVm(guest.vm);
            }
        }
    }

    @Test
    void paravirtualVmsAreRefusedClearly() {
        try (Host source = Host.create(64L << 20); Host destination = Host.create(64L << 20)) {
            Vm pv = source.createVm(VmConfig.of(16L << 20).withPaging(PagingMode.PARAVIRTUAL));
            MigrationException refused = assertThrows(MigrationException.class,
                () -> Migration.toHost(pv, destination, MigrationConfig.defaults()));
            assertTrue(refused.getMessage().contains("PARAVIRTUAL"), refused.getMessage());
            assertFalse(pv.paused());
            assertEquals(0, destination.vms().size());
        }
    }
}
