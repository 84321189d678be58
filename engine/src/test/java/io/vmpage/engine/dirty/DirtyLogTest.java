package io.vmpage.engine.dirty;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.vmpage.engine.ExitReason;
import io.vmpage.engine.Host;
import io.vmpage.engine.LoggedGuest;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.guest.GuestKernel;
import io.vmpage.engine.guest.GuestProgram;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;

/** Dirty logging through the public API, in every paging mode with every method it supports. */
class DirtyLogTest {
    static List<Arguments> combinations() {
        List<Arguments> all = new ArrayList<>();
        for (PagingMode mode : PagingMode.values()) {
            for (DirtyTracking how : DirtyTracking.values()) {
                if (how != DirtyTracking.DIRTY_BITS || mode == PagingMode.NESTED) {
                    all.add(Arguments.of(mode, how));
                }
            }
        }
        return all;
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("combinations")
    void reportsEveryWrittenPageOnceAndAgainAfterRewrite(PagingMode mode, DirtyTracking how) {
        try (LoggedGuest g = new LoggedGuest(mode, 1, 64)) {
            Vcpu cpu = g.vm.vcpu(0);
            DirtyLog log = g.vm.dirtyLog();
            DirtySnapshot snapshot = new DirtySnapshot(g.vm.physicalMap().frames());
            log.enable(how);
            assertEquals(how, log.method());
            log.harvest(snapshot);
            for (int p = 0; p < 64; p++) {
                assertFalse(snapshot.isDirty(g.gfnOfPage[p]), "page " + p + " was written before logging only");
            }

            int[] written = {3, 17, 40, 63};
            long firstWriteExits = g.exits(ExitReason.DIRTY_LOG);
            cpu.run(() -> {
                for (int p : written) {
                    for (int i = 0; i < 100; i++) {
                        cpu.writeLong(LoggedGuest.page(p) + 8L * i, i);
                    }
                }
                for (int p = 0; p < 64; p++) {
                    cpu.readLong(LoggedGuest.page(p)); // reads never count
                }
            });
            long faults = g.exits(ExitReason.DIRTY_LOG) - firstWriteExits;
            if (how == DirtyTracking.DIRTY_BITS) {
                assertEquals(0, faults, "D-bit logging never exits on writes");
            } else if (mode == PagingMode.NESTED) {
                // with EPT A/D on, the walk's accesses to the guest's own tables are writes too (SDM 29.3.3.2)
                assertTrue(faults >= written.length, "a write-protect exit per page: " + faults);
            } else {
                assertEquals(written.length, faults, "one write-protect exit per page");
            }
            long steady = g.exits(ExitReason.DIRTY_LOG);
            cpu.run(() -> {
                for (int p : written) {
                    cpu.writeLong(LoggedGuest.page(p) + 8, -1);
                }
            });
            assertEquals(steady, g.exits(ExitReason.DIRTY_LOG), "no exit for a page already written since the harvest");
            log.harvest(snapshot);
            assertReported(g, snapshot, written);

            log.harvest(snapshot);
            assertReported(g, snapshot, new int[0]);

            cpu.run(() -> cpu.writeLong(LoggedGuest.page(17) + 16, 99)); // re-dirtied after a harvest
            log.harvest(snapshot);
            assertReported(g, snapshot, new int[] {17});
            assertEquals(99, cpu.readLong(LoggedGuest.page(17) + 16));
        }
    }

    private static void assertReported(LoggedGuest g, DirtySnapshot snapshot, int[] pages) {
        for (int p = 0; p < g.gfnOfPage.length; p++) {
            boolean expected = false;
            for (int w : pages) {
                expected |= w == p;
            }
            assertEquals(expected, snapshot.isDirty(g.gfnOfPage[p]), "page " + p + " (gfn " + g.gfnOfPage[p] + ") reported");
        }
    }

    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"SHADOW", "PARAVIRTUAL"})
    void dirtyBitsNeedNestedPaging(PagingMode mode) {
        try (LoggedGuest g = new LoggedGuest(mode, 1, 1)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> g.vm.dirtyLog().enable(DirtyTracking.DIRTY_BITS));
            assertTrue(e.getMessage().contains("NESTED"), e.getMessage());
            assertFalse(g.vm.dirtyLog().enabled());
        }
    }

    @Test
    void oneMethodAtATimeAndRingSizeIsChecked() {
        try (LoggedGuest g = new LoggedGuest(PagingMode.NESTED, 1, 1)) {
            DirtyLog log = g.vm.dirtyLog();
            assertThrows(IllegalArgumentException.class, () -> log.enable(DirtyTracking.DIRTY_RING, 100));
            log.enable(DirtyTracking.WRITE_PROTECT);
            log.enable(DirtyTracking.WRITE_PROTECT); // same method again: nothing to do
            assertThrows(IllegalStateException.class, () -> log.enable(DirtyTracking.DIRTY_BITS));
            log.disable();
            log.enable(DirtyTracking.DIRTY_RING, 128);
            log.disable();
            assertThrows(IllegalArgumentException.class, () -> log.enable(DirtyTracking.DIRTY_RING, 256));
        }
    }

    @ParameterizedTest
    @EnumSource(PagingMode.class)
    void aFullRingExitsAndIsReapedWithoutLosingAPage(PagingMode mode) {
        int pages = 300;
        try (LoggedGuest g = new LoggedGuest(mode, 1, pages)) {
            Vcpu cpu = g.vm.vcpu(0);
            DirtyLog log = g.vm.dirtyLog();
            log.enable(DirtyTracking.DIRTY_RING, 64);
            DirtySnapshot snapshot = new DirtySnapshot(g.vm.physicalMap().frames());
            log.harvest(snapshot);
            cpu.run(() -> {
                for (int p = 0; p < pages; p++) {
                    cpu.writeLong(LoggedGuest.page(p), -p);
                }
            });
            assertTrue(g.exits(ExitReason.DIRTY_RING_FULL) >= pages / 64, "ring-full exits: " + g.exits(ExitReason.DIRTY_RING_FULL));
            assertTrue(log.ringEntries(0) < 64, "reaped before the vCPU re-entered");
            log.harvest(snapshot);
            int[] all = new int[pages];
            for (int p = 0; p < pages; p++) {
                all[p] = p;
            }
            assertReported(g, snapshot, all);
            assertEquals(0, log.ringEntries(0));
        }
    }

    @Test
    void aReaperThreadKeepsRingsFromFilling() throws Exception {
        int pages = 300;
        try (LoggedGuest g = new LoggedGuest(PagingMode.NESTED, 1, pages)) {
            Vcpu cpu = g.vm.vcpu(0);
            DirtyLog log = g.vm.dirtyLog();
            log.enable(DirtyTracking.DIRTY_RING, 256);
            DirtySnapshot snapshot = new DirtySnapshot(g.vm.physicalMap().frames());
            log.harvest(snapshot);
            try (AutoCloseable reaper = log.startReaper(50)) {
                cpu.run(() -> {
                    for (int p = 0; p < pages; p++) {
                        cpu.writeLong(LoggedGuest.page(p), p);
                        if (p % 100 == 99) {
                            long deadline = System.nanoTime() + 5_000_000_000L;
                            while (log.ringEntries(0) > 0 && System.nanoTime() < deadline) {
                                cpu.relax(); // the reaper drains the ring meanwhile
                            }
                            assertEquals(0, log.ringEntries(0), "the reaper drained the ring");
                        }
                    }
                });
            }
            assertEquals(0, g.exits(ExitReason.DIRTY_RING_FULL), "never full: 100 entries between drains, ring of 256");
            log.harvest(snapshot);
            int[] all = new int[pages];
            for (int p = 0; p < pages; p++) {
                all[p] = p;
            }
            assertReported(g, snapshot, all);
        }
    }

    @ParameterizedTest
    @EnumSource(PagingMode.class)
    void hostWritesAreLoggedAndDisableKeepsWhatWasLogged(PagingMode mode) {
        try (LoggedGuest g = new LoggedGuest(mode, 1, 8)) {
            Vcpu cpu = g.vm.vcpu(0);
            DirtyLog log = g.vm.dirtyLog();
            DirtySnapshot snapshot = new DirtySnapshot(g.vm.physicalMap().frames());
            log.enable(DirtyTracking.WRITE_PROTECT);
            log.harvest(snapshot);
            g.vm.writePhysicalLong(g.gfnOfPage[2] << 12, 5); // device emulation / DMA
            cpu.run(() -> cpu.writeLong(LoggedGuest.page(4), 6));
            log.disable();
            cpu.run(() -> cpu.writeLong(LoggedGuest.page(6), 7)); // after disable: write access comes back, unlogged
            log.harvest(snapshot);
            assertReported(g, snapshot, new int[] {2, 4});
            assertEquals(7, cpu.readLong(LoggedGuest.page(6)));
            log.harvest(snapshot);
            assertReported(g, snapshot, new int[0]);
        }
    }

    /**
     * Pre-copy migration in one thread: copy all memory once logging is on, then after each slice of a
     * seeded guest program copy only what each harvest reports; the copy ends byte-identical to the
     * guest, and the guest saw exactly what it sees without logging.
     */
    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("combinations")
    void harvestedCopiesConvergeAndLoggingIsInvisibleToTheGuest(PagingMode mode, DirtyTracking how) {
        GuestProgram.Trace plain;
        try (Host host = Host.create(96L << 20)) {
            Vm vm = host.createVm(VmConfig.of(32L << 20).withPaging(mode));
            GuestProgram program = new GuestProgram(GuestKernel.boot(vm), GuestProgram.Mix.MIXED, 11).prepare();
            for (int slice = 0; slice < 6; slice++) {
                program.run(700);
            }
            plain = program.run(0);
        }
        try (Host host = Host.create(96L << 20)) {
            Vm vm = host.createVm(VmConfig.of(32L << 20).withPaging(mode));
            GuestProgram program = new GuestProgram(GuestKernel.boot(vm), GuestProgram.Mix.MIXED, 11).prepare();
            DirtyLog log = vm.dirtyLog();
            log.enable(how);
            byte[] copy = new byte[(int) vm.memorySize()];
            vm.readPhysical(0, copy, 0, copy.length);
            DirtySnapshot snapshot = new DirtySnapshot(vm.physicalMap().frames());
            long reported = 0;
            for (int slice = 0; slice < 6; slice++) {
                program.run(700);
                reported += log.harvest(snapshot);
                snapshot.forEach(gfn -> vm.readPhysical(gfn << 12, copy, (int) (gfn << 12), 4096));
            }
            GuestProgram.Trace logged = program.run(0);
            assertTrue(reported > 0);
            byte[] memory = new byte[copy.length];
            vm.readPhysical(0, memory, 0, memory.length);
            assertArrayEquals(memory, copy, "a page written after logging started was never reported");
            assertEquals(plain.count(), logged.count());
            assertArrayEquals(plain.values(), logged.values(), "the guest observed the dirty log");
        }
    }

    /**
     * Discarding a frame changes what the guest reads there (zeros from now on): the harvest after it
     * must report the page, or a copy built from harvests (a migration) keeps the discarded bytes.
     */
    @ParameterizedTest
    @EnumSource(DirtyTracking.class)
    void aDiscardedFrameIsReportedSoACopyLearnsItReadsZerosNow(DirtyTracking how) {
        try (LoggedGuest g = new LoggedGuest(PagingMode.NESTED, 1, 16)) {
            Vm vm = g.vm;
            Vcpu cpu = vm.vcpu(0);
            cpu.run(() -> cpu.writeLong(LoggedGuest.page(3) + 16, 0x1234));
            vm.dirtyLog().enable(how);
            byte[] copy = g.memory();
            DirtySnapshot snapshot = new DirtySnapshot(vm.physicalMap().frames());
            vm.dirtyLog().harvest(snapshot);
            assertTrue(vm.discardFrame(g.gfnOfPage[3]));
            vm.dirtyLog().harvest(snapshot);
            assertTrue(snapshot.isDirty(g.gfnOfPage[3]), "the discard is reported");
            snapshot.forEach(gfn -> vm.readPhysical(gfn << 12, copy, (int) (gfn << 12), 4096));
            assertArrayEquals(g.memory(), copy, "the copy built from the harvests shows the zeros");
            assertEquals(0, cpu.readLong(LoggedGuest.page(3) + 16));
        }
    }

    /**
     * Guest page tables built from the host side ({@link Vm#guestPageTables}) while the log is on and a
     * harvester runs back to back: every entry store that completed before a harvest started is in the
     * copy built from it. Two builders on tables of their own, values increasing per entry; bounded
     * (1 s) and seeded. Repeated: in a warm JVM about half the runs lost a store before the host-store
     * mark was fenced (its bit check passed the store still in the store buffer, see
     * {@code DirtyLog.Writer.markHost}).
     */
    @org.junit.jupiter.api.RepeatedTest(5)
    @org.junit.jupiter.api.Timeout(60)
    void everyGuestPageTableStoreIsInTheCopyOfTheNextHarvest() throws Exception {
        try (Host host = Host.create(64L << 20)) {
            Vm vm = host.createVm(VmConfig.of(16L << 20).withPaging(PagingMode.NESTED));
            vm.dirtyLog().enable(DirtyTracking.WRITE_PROTECT);
            byte[] copy = new byte[(int) vm.memorySize()];
            java.nio.ByteBuffer view = java.nio.ByteBuffer.wrap(copy).order(java.nio.ByteOrder.LITTLE_ENDIAN);
            java.util.concurrent.atomic.AtomicInteger started = new java.util.concurrent.atomic.AtomicInteger();
            int builders = 2;
            int max = 1 << 22;
            int[][] at = new int[builders][max];
            int[][] before = new int[builders][max];
            java.util.concurrent.atomic.AtomicIntegerArray published = new java.util.concurrent.atomic.AtomicIntegerArray(builders);
            java.util.concurrent.atomic.AtomicReference<Throwable> failure = new java.util.concurrent.atomic.AtomicReference<>();
            long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(1);
            Thread[] threads = new Thread[builders];
            for (int b = 0; b < builders; b++) {
                int me = b;
                io.vmpage.mmu.PageTables tables = vm.guestPageTables((8L + 2 * me) << 20, (10L + 2 * me) << 20);
                threads[b] = new Thread(() -> {
                    java.util.SplittableRandom random = new java.util.SplittableRandom(1201 + me);
                    try {
                        for (int n = 1; n < max && ((n & 255) != 0 || System.nanoTime() < deadline); n++) {
                            long va = 0x4000_0000L + ((long) random.nextInt(512) << 12);
                            long leaf = tables.map(va, (long) n << 12, io.vmpage.mmu.Pte.SHIFT_4K, io.vmpage.mmu.Pte.P | io.vmpage.mmu.Pte.RW);
                            before[me][n] = started.get();
                            at[me][n] = (int) leaf;
                            published.lazySet(me, n);
                        }
                    } catch (Throwable t) {
                        failure.compareAndSet(null, t);
                    }
                }, "builder-" + b);
                threads[b].start();
            }
            vm.readPhysical(0, copy, 0, copy.length);
            DirtySnapshot snapshot = new DirtySnapshot(vm.physicalMap().frames());
            int[] checked = new int[builders];
            java.util.Arrays.fill(checked, 1);
            boolean running = true;
            while (running) {
                running = threads[0].isAlive() || threads[1].isAlive();
                int k = started.incrementAndGet();
                vm.dirtyLog().harvest(snapshot);
                snapshot.forEach(gfn -> vm.readPhysical(gfn << 12, copy, (int) (gfn << 12), 4096));
                for (int b = 0; b < builders; b++) {
                    int end = published.get(b);
                    int i = checked[b];
                    for (; i <= end && before[b][i] < k; i++) {
                        long found = view.getLong(at[b][i]) >>> 12;
                        if (found < i) {
                            fail("builder " + b + " store " + i + " at guest-physical 0x" + Integer.toHexString(at[b][i])
                                + " completed before harvest " + k + " but its copy holds store " + found);
                        }
                    }
                    checked[b] = i;
                }
            }
            for (Thread t : threads) {
                t.join();
            }
            assertNull(failure.get(), () -> "a builder failed: " + failure.get());
            assertTrue(checked[0] > 1000 && checked[1] > 1000, "stores checked: " + java.util.Arrays.toString(checked));
        }
    }
}
