package io.vmpage.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.memory.P2mEntry;
import io.vmpage.mmu.MachineMemory;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * "Not here yet": guest frames marked remote are fetched on first touch, once, by whichever vCPU or
 * host access gets there first, as a post-copy destination brings pages in.
 */
class FetchOnFaultTest {
    private static final int PAGES = 32;

    /** A destination of {@code source}: every frame copied except the heap pages, which are remote. */
    private static Vm destinationOf(LoggedGuest source, Host host) {
        Set<Long> heap = new HashSet<>();
        for (long gfn : source.gfnOfPage) {
            heap.add(gfn);
        }
        return source.copyTo(host, heap::contains);
    }

    /** Fetches from the paused source, counting fetches per frame and taking its time, so touches overlap. */
    private static FrameFetcher fromSource(Vm source, ConcurrentHashMap<Long, AtomicInteger> fetches) {
        return (gfn, kind, payload, memory, frameAddress) -> {
            assertEquals(P2mEntry.REMOTE, kind);
            fetches.computeIfAbsent(gfn, g -> new AtomicInteger()).incrementAndGet();
            byte[] page = new byte[MachineMemory.FRAME_SIZE];
            source.readPhysical(gfn << MachineMemory.FRAME_SHIFT, page, 0, page.length);
            java.util.concurrent.locks.LockSupport.parkNanos(200_000);
            memory.putBytes(frameAddress, page, 0, page.length);
        };
    }

    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void everyRemoteFrameIsFetchedExactlyOnceWhileTwoVcpusTouchThemAtOnce(PagingMode mode) throws Exception {
        try (LoggedGuest source = new LoggedGuest(mode, 2, PAGES); Host host = Host.create(64L << 20)) {
            source.vm.pause();
            Vm destination = destinationOf(source, host);
            ConcurrentHashMap<Long, AtomicInteger> fetches = new ConcurrentHashMap<>();
            destination.setFrameFetcher(fromSource(source.vm, fetches));
            destination.pause();
            destination.importState(source.vm.exportState());
            destination.resume();

            CountDownLatch start = new CountDownLatch(1);
            AtomicReference<Throwable> failure = new AtomicReference<>();
            Thread[] readers = new Thread[2];
            for (int r = 0; r < readers.length; r++) {
                Vcpu cpu = destination.vcpu(r);
                readers[r] = new Thread(() -> {
                    try {
                        start.await();
                        cpu.run(() -> {
                            for (int p = 0; p < PAGES; p++) { // both in the same order: they collide on each page
                                assertEquals(p, cpu.readLong(LoggedGuest.page(p)), "page " + p + " on " + cpu);
                            }
                        });
                    } catch (Throwable t) {
                        failure.compareAndSet(null, t);
                    }
                });
                readers[r].start();
            }
            start.countDown();
            for (Thread t : readers) {
                t.join();
            }
            if (failure.get() != null) {
                throw new AssertionError("a reader failed", failure.get());
            }
            assertEquals(PAGES, fetches.size(), "every remote page was fetched");
            fetches.forEach((gfn, n) -> assertEquals(1, n.get(), "guest frame " + gfn + " fetched " + n + " times"));
            for (long gfn : source.gfnOfPage) {
                assertEquals(P2mEntry.PRIVATE, P2mEntry.kind(destination.physicalMap().entry(gfn)));
                assertTrue(P2mEntry.isPresent(destination.physicalMap().entry(gfn)));
            }
        }
    }

    @Test
    void hostAccessesBringRemoteFramesInAndAStoreKeepsTheRestOfThePage() {
        try (LoggedGuest source = new LoggedGuest(PagingMode.NESTED, 1, PAGES); Host host = Host.create(64L << 20)) {
            source.vm.pause();
            Vm destination = destinationOf(source, host);
            ConcurrentHashMap<Long, AtomicInteger> fetches = new ConcurrentHashMap<>();
            destination.setFrameFetcher(fromSource(source.vm, fetches));
            long gpa3 = source.gfnOfPage[3] << MachineMemory.FRAME_SHIFT;
            assertEquals(3, destination.readPhysicalLong(gpa3), "a host read fetches the real contents, not zeros");
            long gpa5 = source.gfnOfPage[5] << MachineMemory.FRAME_SHIFT;
            destination.writePhysicalLong(gpa5 + 8, 99);
            assertEquals(5, destination.readPhysicalLong(gpa5), "the store landed on the fetched contents");
            assertEquals(99, destination.readPhysicalLong(gpa5 + 8));
            assertEquals(2, fetches.size());
        }
    }

    @Test
    void aFailedFetchLeavesTheFrameRemoteAndTheNextTouchTriesAgain() {
        try (LoggedGuest source = new LoggedGuest(PagingMode.NESTED, 1, PAGES); Host host = Host.create(64L << 20)) {
            source.vm.pause();
            Vm destination = destinationOf(source, host);
            long gfn = source.gfnOfPage[7];
            long free = host.frames().freeFrames();
            AtomicInteger calls = new AtomicInteger();
            ConcurrentHashMap<Long, AtomicInteger> fetches = new ConcurrentHashMap<>();
            FrameFetcher working = fromSource(source.vm, fetches);
            destination.setFrameFetcher((g, kind, payload, memory, at) -> {
                if (calls.incrementAndGet() == 1) {
                    throw new IllegalStateException("return path lost");
                }
                working.fetch(g, kind, payload, memory, at);
            });
            IllegalStateException lost = assertThrows(IllegalStateException.class,
                () -> destination.readPhysicalLong(gfn << MachineMemory.FRAME_SHIFT));
            assertEquals("return path lost", lost.getMessage());
            assertEquals(P2mEntry.REMOTE, P2mEntry.kind(destination.physicalMap().entry(gfn)));
            assertEquals(free, host.frames().freeFrames(), "the frame for it went back");
            assertEquals(7, destination.readPhysicalLong(gfn << MachineMemory.FRAME_SHIFT));
        }
    }

    @Test
    void remoteFramesNeedAFetcherAndOnlyEmptyFramesCanBeMarked() {
        try (Host host = Host.create(64L << 20)) {
            Vm vm = host.createVm(VmConfig.of(16L << 20));
            vm.writePhysicalLong(0, 1);
            assertThrows(IllegalStateException.class, () -> vm.markRemote(0), "populated, not paused");
            assertThrows(IllegalArgumentException.class, () -> vm.markRemote(1L << 40));
            vm.markRemote(5);
            IllegalStateException none = assertThrows(IllegalStateException.class, () -> vm.readPhysicalLong(5L << 12));
            assertTrue(none.getMessage().contains("no frame fetcher"), none.getMessage());
        }
    }

    /**
     * Hybrid migration's destination: a paused VM that never ran drops the stale copy of a frame it
     * holds when the frame is marked remote (QEMU's postcopy discard), and the next touch fetches the
     * new contents. Once a vCPU ran, a populated frame is refused: a TLB or EPT entry may still map it.
     */
    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    void aPausedVmThatNeverRanDropsAStaleCopyForARemoteOne(PagingMode mode) {
        try (LoggedGuest source = new LoggedGuest(mode, 1, PAGES); Host host = Host.create(64L << 20)) {
            source.vm.pause();
            Vm destination = source.copyTo(host, gfn -> false); // everything here
            destination.pause(); // and never ran
            long gfn = source.gfnOfPage[4];
            long free = host.frames().freeFrames();
            long populated = destination.populatedFrames();
            source.vm.writePhysicalLong(gfn << MachineMemory.FRAME_SHIFT, 444); // written again after it was copied
            destination.markRemote(gfn);
            assertEquals(P2mEntry.REMOTE, P2mEntry.kind(destination.physicalMap().entry(gfn)));
            assertEquals(free + 1, host.frames().freeFrames(), "the stale copy's frame went back to the host");
            assertEquals(populated - 1, destination.populatedFrames());
            ConcurrentHashMap<Long, AtomicInteger> fetches = new ConcurrentHashMap<>();
            destination.setFrameFetcher(fromSource(source.vm, fetches));
            assertEquals(444, destination.readPhysicalLong(gfn << MachineMemory.FRAME_SHIFT), "the new contents, fetched");
            assertEquals(1, fetches.size());

            destination.importState(source.vm.exportState());
            destination.resume();
            destination.vcpu(0).writeLong(LoggedGuest.page(6), 1); // a vCPU ran: its translations may map any frame now
            destination.pause();
            long other = source.gfnOfPage[5];
            IllegalStateException refused = assertThrows(IllegalStateException.class, () -> destination.markRemote(other));
            assertTrue(refused.getMessage().contains("never run"), refused.getMessage());
        }
    }
}
