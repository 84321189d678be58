package io.vmpage.engine.dirty;


import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

class DirtyBitmapTest {
    @Test
    void marksOnceAndHarvestTakesAndClears() {
        DirtyBitmap bitmap = new DirtyBitmap(200);
        assertEquals(4, bitmap.words());
        assertTrue(bitmap.mark(0));
        assertTrue(bitmap.mark(63));
        assertTrue(bitmap.mark(64));
        assertTrue(bitmap.mark(199));
        assertFalse(bitmap.mark(63), "already dirty: no change");
        assertTrue(bitmap.isDirty(64));
        assertFalse(bitmap.isDirty(65));
        assertEquals(4, bitmap.count());

        DirtySnapshot snapshot = new DirtySnapshot(200);
        assertEquals(4, bitmap.harvest(snapshot));
        assertEquals(4, snapshot.count());
        assertEquals(0, bitmap.count(), "harvest leaves the bitmap clean");
        long[] seen = new long[4];
        int[] n = {0};
        snapshot.forEach(gfn -> seen[n[0]++] = gfn);
        assertArrayEquals(new long[] {0, 63, 64, 199}, seen);
        assertEquals(63, snapshot.next(1));
        assertEquals(199, snapshot.next(65));
        assertEquals(-1, snapshot.next(200));
        assertEquals(0, bitmap.harvest(snapshot), "nothing new");
        assertEquals(4, snapshot.count(), "harvest adds to what the snapshot holds");
    }

    @Test
    void rejectsFramesOutsideAndMismatchedSnapshots() {
        DirtyBitmap bitmap = new DirtyBitmap(100);
        assertThrows(IndexOutOfBoundsException.class, () -> bitmap.mark(100));
        assertThrows(IndexOutOfBoundsException.class, () -> bitmap.mark(-1));
        assertThrows(IllegalArgumentException.class, () -> bitmap.harvest(new DirtySnapshot(101)));
        assertThrows(IllegalArgumentException.class, () -> new DirtyBitmap(0));
    }

    /** Markers and a harvester on the same words: every mark lands in exactly one harvest. */
    @Test
    @Timeout(30)
    void concurrentMarksAreNeverLostNorDoubled() throws Exception {
        int frames = 256;
        int markers = 2;
        int rounds = 20_000;
        DirtyBitmap bitmap = new DirtyBitmap(frames);
        long[] markedPerFrame = new long[frames];
        long[] reported = new long[frames];
        AtomicBoolean done = new AtomicBoolean();
        CountDownLatch start = new CountDownLatch(1);
        // Each marker owns frames i % markers == id and marks a frame only after the previous mark of it was
        // harvested, so the number of marks that set a bit must equal the number of reports.
        long[][] sets = new long[markers][frames];
        Thread[] threads = new Thread[markers];
        for (int id = 0; id < markers; id++) {
            int me = id;
            threads[id] = new Thread(() -> {
                SplittableRandom random = new SplittableRandom(7 + me);
                await(start);
                for (int r = 0; r < rounds; r++) {
                    int gfn = random.nextInt(frames / markers) * markers + me;
                    if (bitmap.mark(gfn)) {
                        sets[me][gfn]++;
                    }
                }
            });
            threads[id].start();
        }
        DirtySnapshot snapshot = new DirtySnapshot(frames);
        start.countDown();
        while (!done.get()) {
            snapshot.clear();
            bitmap.harvest(snapshot);
            snapshot.forEach(gfn -> reported[(int) gfn]++);
            boolean alive = false;
            for (Thread t : threads) {
                alive |= t.isAlive();
            }
            done.set(!alive);
        }
        snapshot.clear();
        bitmap.harvest(snapshot);
        snapshot.forEach(gfn -> reported[(int) gfn]++);
        for (int id = 0; id < markers; id++) {
            for (int f = 0; f < frames; f++) {
                markedPerFrame[f] += sets[id][f];
            }
        }
        assertArrayEquals(markedPerFrame, reported, "each bit set by a mark is reported exactly once");
    }

    private static void await(CountDownLatch latch) {
        try {
            latch.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
