package io.vmpage.engine.dirty;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.vmpage.engine.Driving;
import io.vmpage.engine.LoggedGuest;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
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
 * Dirty logging under writers that never pause, as pre-copy migration runs it: writer vCPUs store
 * sequence-numbered values into pages of their own while one harvester thread harvests back to back and
 * copies what each harvest reports. The invariant, checked after every harvest: <i>every write that
 * completed before a harvest started is in the copy built from that harvest</i> (the value at its
 * location there is that write's or a later one of the same writer). Writers drive their vCPU both ways
 * an embedder can: attached ({@link Vcpu#attachThread}) and with one-off accesses from a thread that does
 * not run the vCPU. More threads than cores, so that a writer is preempted inside an access now and then.
 * Bounded in time; the seeds make each writer's location sequence reproducible.
 */
class DirtyLogConcurrencyTest {
    private static final int WRITERS = 3;
    private static final int PAGES_PER_WRITER = 16;
    private static final int PAGES = WRITERS * PAGES_PER_WRITER;
    private static final int MAX_WRITES = 1 << 22;
    private static final long RUN_NANOS = TimeUnit.MILLISECONDS.toNanos(1500);

    /** How a writer thread drives its vCPU. */


    static List<org.junit.jupiter.params.provider.Arguments> drivenCombinations() {
        List<org.junit.jupiter.params.provider.Arguments> all = new ArrayList<>();
        for (org.junit.jupiter.params.provider.Arguments a : DirtyLogTest.combinations()) {
            for (Driving d : Driving.values()) {
                all.add(org.junit.jupiter.params.provider.Arguments.of(a.get()[0], a.get()[1], d));
            }
        }
        return all;
    }

    static List<org.junit.jupiter.params.provider.Arguments> combinations() {
        return DirtyLogTest.combinations();
    }

    /** One writer's journal: written by the writer, read by the harvester up to {@link #published}. */
    static final class Journal {
        final int[] gpa = new int[MAX_WRITES];
        /** Harvests started when the write had completed: the write must be in every copy after a later one. */
        final int[] startedBefore = new int[MAX_WRITES];
        final java.util.concurrent.atomic.AtomicInteger published = new java.util.concurrent.atomic.AtomicInteger();
        int checked;
    }

    static long value(int writer, int seq) {
        return ((long) (writer + 1) << 48) | seq;
    }

    @ParameterizedTest(name = "{0} {1} {2}")
    @MethodSource("drivenCombinations")
    @Timeout(60)
    void everyWriteCompletedBeforeAHarvestIsInTheCopyBuiltFromIt(PagingMode mode, DirtyTracking how, Driving driving) throws Exception {
        long seed = 20261201L + mode.ordinal() * 31 + how.ordinal() * 7 + driving.ordinal();
        try (LoggedGuest g = new LoggedGuest(mode, WRITERS, PAGES)) {
            Vm vm = g.vm;
            DirtyLog log = vm.dirtyLog();
            log.enable(how, 64); // a small ring so ring-full exits happen under load
            byte[] copy = new byte[(int) vm.memorySize()];
            java.nio.ByteBuffer copyView = java.nio.ByteBuffer.wrap(copy).order(java.nio.ByteOrder.LITTLE_ENDIAN);
            vm.readPhysical(0, copy, 0, copy.length);
            java.util.concurrent.atomic.AtomicInteger started = new java.util.concurrent.atomic.AtomicInteger();
            Journal[] journals = new Journal[WRITERS];
            AtomicReference<Throwable> failure = new AtomicReference<>();
            CountDownLatch go = new CountDownLatch(1);
            long deadline = System.nanoTime() + RUN_NANOS;
            java.util.concurrent.atomic.AtomicBoolean stop = new java.util.concurrent.atomic.AtomicBoolean();
            Thread[] writers = new Thread[WRITERS];
            for (int w = 0; w < WRITERS; w++) {
                int me = w;
                Journal j = journals[w] = new Journal();
                writers[w] = new Thread(() -> {
                    Vcpu cpu = vm.vcpu(me);
                    SplittableRandom random = new SplittableRandom(seed * 1000 + me);
                    try {
                        go.await();
                        if (driving == Driving.ATTACHED) {
                            cpu.attachThread();
                        }
                        for (int n = 0; n < MAX_WRITES && ((n & 255) != 0 || !stop.get() && System.nanoTime() < deadline); n++) {
                            int page = me * PAGES_PER_WRITER + random.nextInt(PAGES_PER_WRITER);
                            int word = random.nextInt(512);
                            cpu.writeLong(LoggedGuest.page(page) + 8L * word, value(me, n + 1));
                            j.startedBefore[n] = started.get();
                            j.gpa[n] = (int) ((g.gfnOfPage[page] << 12) + 8L * word);
                            j.published.lazySet(n + 1);
                        }
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
            go.countDown();
            int harvests = 0;
            try {
                boolean running = true;
                while (running) {
                    running = false;
                    for (Thread t : writers) {
                        running |= t.isAlive();
                    }
                    int k = started.incrementAndGet();
                    harvestAndCopy(vm, snapshot, null, copy);
                    harvests++;
                    for (int w = 0; w < WRITERS; w++) {
                        checkJournal(journals[w], w, k, copyView, seed);
                    }
                }
            } finally { // a failed check stops the writers before the host goes
                stop.set(true);
                for (Thread t : writers) {
                    t.join();
                }
            }
            assertNull(failure.get(), () -> "a writer failed: " + failure.get());
            int k = started.incrementAndGet(); // every write has completed: the last copy holds them all
            harvestAndCopy(vm, snapshot, null, copy);
            long total = 0;
            for (int w = 0; w < WRITERS; w++) {
                checkJournal(journals[w], w, k, copyView, seed);
                assertEquals(journals[w].published.get(), journals[w].checked, "writer " + w + ": every write checked");
                total += journals[w].checked;
            }
            // A floor, not a target: on a loaded 2-core machine the writers may reach MAX_WRITES within ~20 harvests.
            assertTrue(harvests >= 10, "the harvester raced the writers: " + harvests + " harvests");
            assertTrue(total > 10_000, "journalled writes: " + total);
            assertArrayEquals(g.memory(), copy, "the harvested copy differs from guest memory (seed " + seed + ")");
        }
    }

    /** Checks writer {@code w}'s journalled writes that completed before harvest {@code k} started. */
    private static void checkJournal(Journal j, int w, int k, java.nio.ByteBuffer copy, long seed) {
        int end = j.published.get();
        int i = j.checked;
        for (; i < end && j.startedBefore[i] < k; i++) {
            long found = copy.getLong(j.gpa[i]);
            if ((found >>> 48) != w + 1 || (found & 0xFFFF_FFFFL) < i + 1) {
                fail("writer " + w + " write " + (i + 1) + " at guest-physical 0x" + Long.toHexString(j.gpa[i])
                    + " completed before harvest " + k + " started but the copy built from it holds 0x"
                    + Long.toHexString(found) + " (seed " + seed + ")");
            }
        }
        j.checked = i;
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
            List<BitSet> ignored = null;
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
        snapshot.forEach(gfn -> vm.readPhysical(gfn << 12, copy, (int) (gfn << 12), 4096));
    }
}
