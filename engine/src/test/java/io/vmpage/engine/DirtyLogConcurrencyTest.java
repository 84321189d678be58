package io.vmpage.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * N writer vCPUs write seeded random pages while one harvester thread harvests and copies what each
 * harvest reports, as pre-copy migration does. Every write is checked against a per-writer journal: a
 * write that started after {@code harvests()} read h0 must appear in a snapshot numbered above h0 (the
 * last two harvests run after the writers stopped). At the end the copy must equal guest memory byte for
 * byte. Bounded in time; the seeds make each writer's page sequence reproducible.
 *
 * <p>The journal cannot demand a tighter window: as in KVM, a vCPU grants write access before it logs
 * the page, so another vCPU may write the page in between and a harvest may run before the log entry
 * lands; the entry is in place before the granting vCPU re-enters the guest.
 */
class DirtyLogConcurrencyTest {
    private static final int WRITERS = 2;
    private static final int PAGES = 256;
    private static final int WRITES_PER_WRITER = 1 << 20;
    private static final long RUN_NANOS = TimeUnit.MILLISECONDS.toNanos(400);

    static List<org.junit.jupiter.params.provider.Arguments> combinations() {
        return DirtyLogTest.combinations();
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("combinations")
    @Timeout(60)
    void everyJournalledWriteIsHarvestedAndTheCopyConverges(PagingMode mode, DirtyTracking how) throws Exception {
        long seed = 20261123L + mode.ordinal() * 31 + how.ordinal();
        try (LoggedGuest g = new LoggedGuest(mode, WRITERS, PAGES)) {
            Vm vm = g.vm;
            DirtyLog log = vm.dirtyLog();
            log.enable(how, 64); // a small ring so ring-full exits happen under load
            byte[] copy = new byte[(int) vm.memorySize()];
            vm.readPhysical(0, copy, 0, copy.length);
            List<BitSet> snapshots = new ArrayList<>();
            snapshots.add(new BitSet()); // index 0: no harvest yet

            int[][] journalPage = new int[WRITERS][WRITES_PER_WRITER];
            long[][] journalH0 = new long[WRITERS][WRITES_PER_WRITER];
            int[] journalLength = new int[WRITERS];
            AtomicReference<Throwable> failure = new AtomicReference<>();
            CountDownLatch start = new CountDownLatch(1);
            Thread[] writers = new Thread[WRITERS];
            for (int w = 0; w < WRITERS; w++) {
                int me = w;
                writers[w] = new Thread(() -> {
                    Vcpu cpu = vm.vcpu(me);
                    SplittableRandom random = new SplittableRandom(seed * 1000 + me);
                    try {
                        start.await();
                        cpu.attachThread();
                        long deadline = System.nanoTime() + RUN_NANOS;
                        int n = 0;
                        while (n < WRITES_PER_WRITER && System.nanoTime() < deadline) {
                            int page = random.nextInt(PAGES);
                            long h0 = log.harvests();
                            cpu.writeLong(LoggedGuest.page(page) + 8L * random.nextInt(512), ((long) me << 56) | n);
                            journalPage[me][n] = page;
                            journalH0[me][n] = h0;
                            n++;
                        }
                        journalLength[me] = n;
                    } catch (Throwable t) {
                        failure.compareAndSet(null, t);
                    } finally {
                        if (Vcpu.current() == cpu) {
                            cpu.detachThread();
                        }
                    }
                }, "writer-" + w);
                writers[w].start();
            }
            DirtySnapshot snapshot = new DirtySnapshot(vm.physicalMap().frames());
            start.countDown();
            boolean running = true;
            while (running) {
                running = false;
                for (Thread t : writers) {
                    running |= t.isAlive();
                }
                harvestAndCopy(vm, snapshot, snapshots, copy);
            }
            for (Thread t : writers) {
                t.join();
            }
            assertNull(failure.get(), () -> "a writer failed: " + failure.get());
            harvestAndCopy(vm, snapshot, snapshots, copy);
            harvestAndCopy(vm, snapshot, snapshots, copy);
            assertEquals(snapshots.size() - 1, log.harvests());
            assertTrue(snapshots.size() > 10, "the harvester raced the writers: " + snapshots.size() + " harvests");

            long[] reportedFrom = new long[(int) vm.physicalMap().frames()]; // last snapshot reporting each frame
            for (int k = 1; k < snapshots.size(); k++) {
                int kk = k;
                snapshots.get(k).stream().forEach(gfn -> reportedFrom[gfn] = kk);
            }
            long checked = 0;
            for (int w = 0; w < WRITERS; w++) {
                for (int i = 0; i < journalLength[w]; i++) {
                    long gfn = g.gfnOfPage[journalPage[w][i]];
                    long from = journalH0[w][i] + 1;
                    if (reportedFrom[(int) gfn] < from) {
                        fail("writer " + w + " write " + i + " to page " + journalPage[w][i] + " (gfn " + gfn
                            + ") after harvest " + journalH0[w][i] + " is in no later snapshot (seed " + seed + ")");
                    }
                    checked++;
                }
            }
            assertTrue(checked > 1000, "journalled writes: " + checked);
            byte[] memory = g.memory();
            assertArrayEquals(memory, copy, "the harvested copy lost a write (seed " + seed + ")");
        }
    }

    /**
     * Logging switched on and off while the writers run (a migration that is cancelled and restarted):
     * after the last enable, a full copy plus the copies of what each harvest reports converge to guest
     * memory once the writers stop.
     */
    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("combinations")
    @Timeout(60)
    void enablingAndDisablingWhileWritersRun(PagingMode mode, DirtyTracking how) throws Exception {
        try (LoggedGuest g = new LoggedGuest(mode, WRITERS, PAGES)) {
            Vm vm = g.vm;
            DirtyLog log = vm.dirtyLog();
            AtomicReference<Throwable> failure = new AtomicReference<>();
            java.util.concurrent.atomic.AtomicBoolean stop = new java.util.concurrent.atomic.AtomicBoolean();
            Thread[] writers = new Thread[WRITERS];
            for (int w = 0; w < WRITERS; w++) {
                int me = w;
                writers[w] = new Thread(() -> {
                    Vcpu cpu = vm.vcpu(me);
                    SplittableRandom random = new SplittableRandom(77 + me);
                    cpu.attachThread();
                    try {
                        for (long n = 0; !stop.get(); n++) {
                            cpu.writeLong(LoggedGuest.page(random.nextInt(PAGES)) + 8L * random.nextInt(512), n);
                        }
                    } catch (Throwable t) {
                        failure.compareAndSet(null, t);
                    } finally {
                        cpu.detachThread();
                    }
                }, "writer-" + w);
                writers[w].start();
            }
            byte[] copy = new byte[(int) vm.memorySize()];
            DirtySnapshot snapshot = new DirtySnapshot(vm.physicalMap().frames());
            List<BitSet> ignored = new ArrayList<>();
            for (int attempt = 0; attempt < 3; attempt++) {
                Thread.sleep(20);
                log.enable(how, 64);
                vm.readPhysical(0, copy, 0, copy.length);
                for (int round = 0; round < 5; round++) {
                    harvestAndCopy(vm, snapshot, ignored, copy);
                }
                if (attempt < 2) {
                    log.disable();
                }
            }
            stop.set(true);
            for (Thread t : writers) {
                t.join();
            }
            assertNull(failure.get(), () -> "a writer failed: " + failure.get());
            harvestAndCopy(vm, snapshot, ignored, copy);
            assertArrayEquals(g.memory(), copy, "a write after the last enable was lost");
        }
    }

    private static void harvestAndCopy(Vm vm, DirtySnapshot snapshot, List<BitSet> snapshots, byte[] copy) {
        vm.dirtyLog().harvest(snapshot);
        BitSet bits = new BitSet();
        snapshot.forEach(gfn -> {
            bits.set((int) gfn);
            vm.readPhysical(gfn << 12, copy, (int) (gfn << 12), 4096);
        });
        snapshots.add(bits);
    }
}
