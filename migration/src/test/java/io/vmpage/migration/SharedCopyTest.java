package io.vmpage.migration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.Host;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A destination's batch copied by its owner and a helper that never pauses: every page lands once, the
 * helper copies pieces of it, nothing after the owner returned, and a failed piece fails the owner, never
 * the helper.
 */
class SharedCopyTest {
    private static final int PAGES = 2048;

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void aHelperThatNeverPausesCopiesPiecesAndNothingAfterTheBatchEnds() throws Exception {
        try (Host from = Host.create(32L << 20); Host to = Host.create(32L << 20)) {
            Vm source = from.createVm(VmConfig.of(16L << 20));
            SplittableRandom random = new SplittableRandom(0x5C);
            long[] gfns = new long[PAGES];
            for (int i = 0; i < PAGES; i++) {
                gfns[i] = i;
                source.writePhysicalLong((long) i << 12, random.nextLong() | 1);
            }
            AtomicBoolean stop = new AtomicBoolean();
            AtomicLong pieces = new AtomicLong();
            AtomicReference<Throwable> thrown = new AtomicReference<>();
            AtomicReference<SharedCopy> offered = new AtomicReference<>();
            Thread helper = new Thread(() -> {
                try {
                    while (!stop.get()) {
                        SharedCopy c = offered.get();
                        if (c != null && c.help()) {
                            pieces.incrementAndGet();
                        }
                    }
                } catch (Throwable t) {
                    thrown.set(t);
                }
            }, "shared-copy-test-helper");
            helper.start();
            try {
                for (int batch = 0; batch < 40; batch++) {
                    Vm copy = to.createVm(VmConfig.of(16L << 20));
                    SharedCopy shared = new SharedCopy(copy, source);
                    offered.set(shared);
                    shared.copy(gfns, PAGES);
                    assertEquals(PAGES, copy.populatedFrames(), "the owner returned while a piece was still being copied");
                    copy.writePhysicalLong(0, 99); // a piece the helper copied after this would put the page back
                    assertFalse(shared.help(), "the batch is over: no piece is left");
                    Thread.sleep(0, 200_000);
                    assertEquals(99, copy.readPhysicalLong(0), "a piece was copied after the batch ended");
                    for (int i = 1; i < PAGES; i++) {
                        assertEquals(source.readPhysicalLong((long) i << 12), copy.readPhysicalLong((long) i << 12), "page " + i);
                    }
                    offered.set(null);
                    to.destroyVm(copy);
                }
            } finally {
                stop.set(true);
                helper.join();
            }
            assertNull(thrown.get());
            assertTrue(pieces.get() > 0, "the helper copied no piece of 40 batches");
        }
    }

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void aFailedPieceFailsTheOwnerNotTheHelper() throws Exception {
        try (Host from = Host.create(32L << 20); Host to = Host.create(32L << 20)) {
            Vm source = from.createVm(VmConfig.of(16L << 20));
            long[] gfns = new long[PAGES];
            for (int i = 0; i < PAGES; i++) {
                gfns[i] = i;
                source.writePhysicalLong((long) i << 12, i + 1);
            }
            from.destroyVm(source); // every piece fails: the source is gone
            long free = to.frames().freeFrames();
            Vm copy = to.createVm(VmConfig.of(16L << 20));
            SharedCopy shared = new SharedCopy(copy, source);
            AtomicBoolean stop = new AtomicBoolean();
            AtomicReference<Throwable> thrown = new AtomicReference<>();
            Thread helper = new Thread(() -> {
                try {
                    while (!stop.get()) {
                        shared.help();
                    }
                } catch (Throwable t) {
                    thrown.set(t);
                }
            }, "shared-copy-test-helper");
            helper.start();
            try {
                IllegalStateException e = assertThrows(IllegalStateException.class, () -> shared.copy(gfns, PAGES));
                assertTrue(e.getMessage().contains("destroyed"), e.getMessage());
            } finally {
                stop.set(true);
                helper.join();
            }
            assertNull(thrown.get(), "the helper never throws the batch's failure");
            assertEquals(0, copy.populatedFrames(), "no page of a destroyed source landed");
            to.destroyVm(copy);
            assertEquals(free, to.frames().freeFrames(), "every frame went back");
        }
    }
}
