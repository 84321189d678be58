package io.vmpage.engine.memory;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.Host;
import io.vmpage.mmu.MachineMemory;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicIntegerArray;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

class FrameTableTest {
    /**
     * An embedder reaches the frame table through {@code Host.frames()} to read it (free frames, the M2P,
     * descriptors); allocating, freeing or rewriting a descriptor is the engine's alone, or an embedder
     * could free a frame another VM still maps.
     */
    @Test
    void theFrameTableOffersEmbeddersNoWayToChangeFrames() {
        for (java.lang.reflect.Method m : FrameTable.class.getMethods()) {
            if (m.getDeclaringClass() == FrameTable.class) {
                assertFalse(java.util.Set.of("allocate", "free", "compareAndSetDescriptor", "setGuestFrame").contains(m.getName()),
                    m + " is public");
            }
        }
        for (java.lang.reflect.Constructor<?> c : FrameTable.class.getConstructors()) {
            throw new AssertionError(c + " is public");
        }
    }

    /** The descriptor's fields never share a bit (as KVM's static_asserts on the SPTE masks), and round-trip. */
    @Test
    void descriptorFieldsDoNotOverlapAndRoundTrip() {
        long[] fields = {FrameDescriptor.USED, FrameDescriptor.FREE, FrameDescriptor.TYPE_MASK, FrameDescriptor.OWNER_MASK, FrameDescriptor.REFS_MASK};
        for (int i = 0; i < fields.length; i++) {
            for (int j = i + 1; j < fields.length; j++) {
                assertEquals(0, fields[i] & fields[j], "fields " + i + " and " + j + " overlap");
            }
        }
        int[] types = {FrameDescriptor.TYPE_DATA, FrameDescriptor.TYPE_HOST_TABLE, FrameDescriptor.TYPE_L1, FrameDescriptor.TYPE_L4,
            FrameDescriptor.TYPE_WRITABLE, FrameDescriptor.TYPE_SHARED};
        for (int type : types) {
            long d = FrameDescriptor.inUse(type, 0xFFFF, 0xFFFF);
            assertEquals(type, FrameDescriptor.type(d));
            assertEquals(0xFFFF, FrameDescriptor.owner(d));
            assertEquals(0xFFFF, FrameDescriptor.refs(d));
            assertFalse(FrameDescriptor.isFree(d));
            long retyped = FrameDescriptor.withTypeAndRefs(d, FrameDescriptor.TYPE_DATA, 1);
            assertEquals(FrameDescriptor.TYPE_DATA, FrameDescriptor.type(retyped));
            assertEquals(1, FrameDescriptor.refs(retyped));
            assertEquals(0xFFFF, FrameDescriptor.owner(retyped), "the owner survives a retype");
        }
        assertTrue(Host.MAX_SHARERS < FrameDescriptor.refs(FrameDescriptor.REFS_MASK), "the sharer cap fits the reference count");
    }

    @Test
    void allocatesEveryUnreservedFrameOnceThenRunsOut() {
        try (MachineMemory m = MachineMemory.allocate(1 << 20)) {
            FrameTable t = new FrameTable(m, 16);
            assertEquals(240, t.freeFrames());
            boolean[] seen = new boolean[256];
            for (int i = 0; i < 240; i++) {
                long f = t.allocate(3, FrameDescriptor.TYPE_DATA);
                assertTrue(f >= 16 && f < 256, "frame " + f);
                assertFalse(seen[(int) f]);
                seen[(int) f] = true;
                long d = t.descriptor(f);
                assertEquals(3, FrameDescriptor.owner(d));
                assertEquals(1, FrameDescriptor.refs(d));
                assertFalse(FrameDescriptor.isFree(d));
            }
            assertEquals(-1, t.allocate(3, FrameDescriptor.TYPE_DATA));
            assertEquals(0, t.freeFrames());
        }
    }

    @Test
    void reusedFramesComeBackZeroed() {
        try (MachineMemory m = MachineMemory.allocate(1 << 20)) {
            FrameTable t = new FrameTable(m, 0);
            long f = t.allocate(1, FrameDescriptor.TYPE_DATA);
            m.putLong(f << 12, 0x5EC2E7L);
            t.free(f);
            long g = t.allocate(2, FrameDescriptor.TYPE_DATA);
            assertEquals(f, g, "LIFO reuse");
            assertTrue(m.isFrameZero(g), "VM 2 must not see VM 1's data");
            assertThrows(IllegalStateException.class, () -> {
                t.free(g);
                t.free(g);
            });
            assertThrows(IllegalArgumentException.class, () -> t.free(256));
        }
    }

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void concurrentAllocateAndFreeNeverHandOutAFrameTwice() throws Exception {
        try (MachineMemory m = MachineMemory.allocate(4 << 20)) {
            FrameTable t = new FrameTable(m, 0);
            int frames = (int) t.frames();
            AtomicIntegerArray holders = new AtomicIntegerArray(frames);
            int threads = 4;
            ExecutorService pool = Executors.newFixedThreadPool(threads);
            CountDownLatch start = new CountDownLatch(1);
            List<Future<?>> futures = new ArrayList<>();
            for (int th = 0; th < threads; th++) {
                int id = th + 1;
                futures.add(pool.submit(() -> {
                    Random r = new Random(id);
                    long[] held = new long[64];
                    int n = 0;
                    start.await();
                    for (int i = 0; i < 200_000; i++) {
                        if (n < held.length && (n == 0 || r.nextBoolean())) {
                            long f = t.allocate(id, FrameDescriptor.TYPE_DATA);
                            if (f >= 0) {
                                if (!holders.compareAndSet((int) f, 0, id)) {
                                    throw new AssertionError("frame " + f + " handed out twice");
                                }
                                held[n++] = f;
                            }
                        } else {
                            long f = held[--n];
                            holders.set((int) f, 0);
                            t.free(f);
                        }
                    }
                    while (n > 0) {
                        long f = held[--n];
                        holders.set((int) f, 0);
                        t.free(f);
                    }
                    return null;
                }));
            }
            start.countDown();
            for (Future<?> f : futures) {
                f.get(50, TimeUnit.SECONDS);
            }
            pool.shutdown();
            assertEquals(frames, t.freeFrames(), "every frame came back");
            long[] all = new long[frames];
            for (int i = 0; i < frames; i++) {
                all[i] = t.allocate(9, FrameDescriptor.TYPE_DATA);
            }
            assertEquals(frames, java.util.Arrays.stream(all).filter(f -> f >= 0).distinct().count(), "list intact");
        }
    }

    /**
     * The batch operations a migration's destination and a VM teardown use ({@code allocateForFill} of a run
     * of frames, {@code free} of many) mixed with single ones on 4 threads, the list short enough to run
     * dry: no frame is handed out twice, every frame comes back, and a batch holding a frame freed already
     * is refused whole. Seeded, bounded.
     */
    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void batchAllocationsAndFreesMixedWithSingleOnesNeverHandOutAFrameTwice() throws Exception {
        try (MachineMemory m = MachineMemory.allocate(1 << 20)) {
            FrameTable t = new FrameTable(m, 0);
            int frames = (int) t.frames();
            AtomicIntegerArray holders = new AtomicIntegerArray(frames);
            int threads = 4;
            ExecutorService pool = Executors.newFixedThreadPool(threads);
            CountDownLatch start = new CountDownLatch(1);
            List<Future<?>> futures = new ArrayList<>();
            for (int th = 0; th < threads; th++) {
                int id = th + 1;
                futures.add(pool.submit(() -> {
                    Random r = new Random(100 + id);
                    long[] held = new long[96];
                    long[] run = new long[32];
                    int n = 0;
                    start.await();
                    for (int i = 0; i < 100_000; i++) {
                        int op = r.nextInt(4);
                        if (op == 0 && n < held.length) {
                            long f = t.allocate(id, FrameDescriptor.TYPE_DATA);
                            if (f >= 0) {
                                take(holders, f, id);
                                held[n++] = f;
                            }
                        } else if (op == 1 && n + run.length <= held.length) {
                            int got = t.allocateForFill(id, FrameDescriptor.TYPE_DATA, run, 1 + r.nextInt(run.length));
                            for (int k = 0; k < got; k++) {
                                take(holders, run[k], id);
                                held[n++] = run[k];
                            }
                        } else if (op == 2 && n > 0) {
                            long f = held[--n];
                            holders.set((int) f, 0);
                            t.free(f);
                        } else if (n > 0) {
                            int k = 1 + r.nextInt(n);
                            for (int j = 0; j < k; j++) {
                                holders.set((int) held[n - k + j], 0);
                            }
                            t.free(java.util.Arrays.copyOfRange(held, n - k, n), k);
                            n -= k;
                        }
                    }
                    for (int j = 0; j < n; j++) {
                        holders.set((int) held[j], 0); // before the free: another thread may take them at once
                    }
                    t.free(held, n);
                    return null;
                }));
            }
            start.countDown();
            for (Future<?> f : futures) {
                f.get(50, TimeUnit.SECONDS);
            }
            pool.shutdown();
            assertEquals(frames, t.freeFrames(), "every frame came back");
            long[] a = new long[3];
            assertEquals(3, t.allocateForFill(1, FrameDescriptor.TYPE_DATA, a, 3));
            t.free(a[1]);
            IllegalStateException twice = assertThrows(IllegalStateException.class, () -> t.free(a, 3));
            assertTrue(twice.getMessage().contains("freed twice"), twice.getMessage());
            assertEquals(frames - 2, t.freeFrames(), "the refused batch freed nothing");
            t.free(new long[] {a[0], a[2]}, 2);
            long[] all = new long[frames];
            assertEquals(frames, t.allocateForFill(9, FrameDescriptor.TYPE_DATA, all, frames));
            assertEquals(frames, java.util.Arrays.stream(all).distinct().count(), "list intact");
            assertEquals(a[2], all[0], "the last one freed comes out first");
            assertEquals(0, t.allocateForFill(9, FrameDescriptor.TYPE_DATA, new long[1], 1), "none left");
        }
    }

    private static void take(AtomicIntegerArray holders, long f, int id) {
        if (!holders.compareAndSet((int) f, 0, id)) {
            throw new AssertionError("frame " + f + " handed out twice");
        }
    }
}
