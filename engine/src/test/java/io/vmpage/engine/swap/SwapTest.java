package io.vmpage.engine.swap;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.Driving;
import io.vmpage.engine.Host;
import io.vmpage.engine.LoggedGuest;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.VcpuWriters;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.memory.P2mEntry;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLongArray;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;

/** Host swap to a memory-mapped file, through the public API: what goes out comes back, and errors lose nothing. */
class SwapTest {
    private static final int PAGES = 64;

    @TempDir
    Path dir;

    private static byte[] contents(int p) {
        byte[] bytes = new byte[4096];
        new SplittableRandom(0x5A9 + p).nextBytes(bytes);
        return bytes;
    }

    /** A booted guest whose PAGES user pages hold {@link #contents}, written by its vCPU. */
    private static LoggedGuest guest(Host host, PagingMode mode, int vcpus) {
        LoggedGuest g = new LoggedGuest(host, mode, vcpus, PAGES);
        Vcpu cpu = g.vm.vcpu(0);
        cpu.run(() -> {
            for (int p = 0; p < PAGES; p++) {
                cpu.write(LoggedGuest.page(p), contents(p), 0, 4096);
            }
        });
        return g;
    }

    private static byte[] read(Vcpu cpu, int p) {
        byte[] seen = new byte[4096];
        cpu.run(() -> cpu.read(LoggedGuest.page(p), seen, 0, seen.length));
        return seen;
    }

    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    void aSwappedPageComesBackByteIdenticalOnItsNextTouch(PagingMode mode) throws Exception {
        try (Host host = Host.create(96L << 20)) {
            host.attachSwap(SwapDevice.create(dir.resolve("swap"), 1024));
            long freeAtStart = host.frames().freeFrames();
            LoggedGuest g = guest(host, mode, 1);
            long free = host.frames().freeFrames();
            for (int p = 0; p < PAGES; p++) {
                assertTrue(g.vm.swapOut(g.gfnOfPage[p]), "page " + p);
                assertEquals(P2mEntry.SWAPPED, P2mEntry.kind(g.vm.physicalMap().entry(g.gfnOfPage[p])));
            }
            assertEquals(free + PAGES, host.frames().freeFrames(), "the frames went back to the host");
            assertEquals(PAGES, g.vm.swappedFrames());
            assertEquals(PAGES, host.swap().usedSlots());
            Vcpu cpu = g.vm.vcpu(0);
            for (int p = 0; p < PAGES; p++) {
                assertArrayEquals(contents(p), read(cpu, p), "page " + p + " came back changed");
            }
            assertEquals(0, g.vm.swappedFrames());
            assertEquals(0, host.swap().usedSlots(), "a page swapped in gives its slot back");
            assertTrue(g.vm.swapOut(g.gfnOfPage[3]));
            byte[] viaHost = new byte[4096];
            g.vm.readPhysical(g.gfnOfPage[3] << 12, viaHost, 0, 4096); // a host access swaps it in too
            assertArrayEquals(contents(3), viaHost);
            assertTrue(g.vm.swapOut(g.gfnOfPage[4]));
            host.destroyVm(g.vm);
            assertEquals(0, host.swap().usedSlots(), "a destroyed VM's pages leave the swap device");
            assertEquals(freeAtStart, host.frames().freeFrames(), "no frame leaked");
        }
    }

    static java.util.stream.Stream<org.junit.jupiter.params.provider.Arguments> modesAndDrivers() {
        return java.util.stream.Stream.of(PagingMode.NESTED, PagingMode.SHADOW)
            .flatMap(m -> java.util.Arrays.stream(Driving.values()).map(d -> org.junit.jupiter.params.provider.Arguments.of(m, d)));
    }

    /**
     * Writers that never pause store journaled values while the host swaps random pages out as fast as it
     * can: a page is unhooked before it is written out, so a store racing the swap-out either landed before
     * (and is in the slot) or waits for it and swaps the page back in; every page ends with the last value
     * its writer stored.
     */
    @ParameterizedTest
    @MethodSource("modesAndDrivers")
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void writersRacingSwapOutsLoseNoStore(PagingMode mode, Driving driving) throws Exception {
        try (Host host = Host.create(96L << 20)) {
            host.attachSwap(SwapDevice.create(dir.resolve("swap"), 4096));
            LoggedGuest g = guest(host, mode, 1);
            AtomicLongArray journal = new AtomicLongArray(PAGES);
            for (int p = 0; p < PAGES; p++) {
                journal.set(p, g.vm.readPhysicalLong(g.gfnOfPage[p] << 12));
            }
            long swappedOut = 0;
            try (VcpuWriters w = VcpuWriters.start(g.vm, 1, driving, (cpu, n) -> {
                // 99 in 100 stores to a hot set of 4 pages, the rest anywhere: cold pages stay unwritten for
                // the length of a swap-out, and a later store has to swap them back in
                int p = n % 100 != 0 ? (int) (n % 4) : (int) ((n / 100) % PAGES);
                // Each store first reads back what the last one left: a store lost to a swap-out (landed in
                // the frame after its copy went out) shows at once, not only if it was the page's last
                long seen = cpu.readLong(LoggedGuest.page(p));
                if (seen != journal.get(p)) {
                    throw new AssertionError("page " + p + " lost a store: it reads " + seen + ", the last store wrote " + journal.get(p));
                }
                cpu.writeLong(LoggedGuest.page(p), n);
                journal.set(p, n);
            })) {
                SplittableRandom random = new SplittableRandom(7);
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(15);
                while ((swappedOut < 2000) && System.nanoTime() < deadline) {
                    if (g.vm.swapOut(g.gfnOfPage[random.nextInt(PAGES)])) {
                        swappedOut++;
                    }
                }
            }
            assertTrue(swappedOut >= 100, "the race happened: " + swappedOut + " swap-outs");
            for (int p = 0; p < PAGES; p++) {
                assertEquals(journal.get(p), g.vm.readPhysicalLong(g.gfnOfPage[p] << 12), "page " + p + " lost a store");
            }
        }
    }

    /**
     * Host accesses (what a migration's copy and an embedder's reads and writes are) racing swap-outs of the
     * pages they touch: a read finds the page, never the zeros of a frame that is only away on swap, and a
     * store neither waits forever for a swap-out that waits for it, nor is lost. The host thread reads each
     * page back in all three ways before it stores the next value; a seeded schedule, a time bound.
     */
    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void hostReadsAndStoresRacingSwapOutsSeeEveryPageAndLoseNoStore(PagingMode mode) throws Exception {
        try (Host host = Host.create(96L << 20)) {
            host.attachSwap(SwapDevice.create(dir.resolve("swap"), 4096));
            LoggedGuest g = guest(host, mode, 1);
            int hot = 4;
            long[] last = new long[hot];
            for (int p = 0; p < hot; p++) {
                last[p] = g.vm.readPhysicalLong(g.gfnOfPage[p] << 12);
            }
            java.util.concurrent.atomic.AtomicBoolean stop = new java.util.concurrent.atomic.AtomicBoolean();
            java.util.concurrent.atomic.AtomicReference<Throwable> failed = new java.util.concurrent.atomic.AtomicReference<>();
            java.util.concurrent.atomic.AtomicLong accesses = new java.util.concurrent.atomic.AtomicLong();
            Thread accessor = new Thread(() -> {
                byte[] page = new byte[8];
                java.nio.ByteBuffer buffer = java.nio.ByteBuffer.allocateDirect(8).order(java.nio.ByteOrder.nativeOrder());
                try {
                    for (long n = 1; !stop.get(); n++) {
                        int p = (int) (n % hot);
                        long gpa = g.gfnOfPage[p] << 12;
                        long word = g.vm.readPhysicalLong(gpa);
                        g.vm.readPhysical(gpa, page, 0, 8);
                        g.vm.readPhysical(gpa, buffer.clear(), 8);
                        long fromArray = java.nio.ByteBuffer.wrap(page).order(java.nio.ByteOrder.nativeOrder()).getLong();
                        long fromBuffer = buffer.getLong(0);
                        if (word != last[p] || fromArray != last[p] || fromBuffer != last[p]) {
                            throw new AssertionError("page " + p + " read " + word + " / " + fromArray + " / " + fromBuffer
                                + " by host reads; the last host store wrote " + last[p]);
                        }
                        g.vm.writePhysicalLong(gpa, n);
                        last[p] = n;
                        accesses.incrementAndGet();
                    }
                } catch (Throwable t) {
                    failed.set(t);
                }
            }, "host-accessor");
            accessor.start();
            long swappedOut = 0;
            SplittableRandom random = new SplittableRandom(11);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (swappedOut < 3000 && failed.get() == null && System.nanoTime() < deadline) {
                if (g.vm.swapOut(g.gfnOfPage[random.nextInt(hot)])) {
                    swappedOut++;
                }
            }
            stop.set(true);
            accessor.join(TimeUnit.SECONDS.toMillis(20));
            assertFalse(accessor.isAlive(), "a host access hangs racing a swap-out (" + accesses.get() + " done)");
            if (failed.get() != null) {
                throw new AssertionError(failed.get());
            }
            assertTrue(swappedOut >= 100 && accesses.get() >= 100, "the race happened: " + swappedOut + " swap-outs, "
                + accesses.get() + " host accesses");
            for (int p = 0; p < hot; p++) {
                assertEquals(last[p], g.vm.readPhysicalLong(g.gfnOfPage[p] << 12), "page " + p + " lost a host store");
            }
        }
    }

    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    void anIoErrorMidSwapOutLeavesThePageInMemoryAndOneOnSwapInFailsOnlyThatAccess(PagingMode mode) {
        try (Host host = Host.create(96L << 20)) {
            SwapDevice swap = SwapDevice.create(dir.resolve("swap"), 64);
            host.attachSwap(swap);
            LoggedGuest g = guest(host, mode, 1);
            Vcpu cpu = g.vm.vcpu(0);
            long gfn = g.gfnOfPage[5];
            swap.failNextWrites(1);
            SwapException out = assertThrows(SwapException.class, () -> g.vm.swapOut(gfn));
            assertTrue(out.getMessage().contains("injected I/O error"), out.getMessage());
            assertEquals(P2mEntry.PRIVATE, P2mEntry.kind(g.vm.physicalMap().entry(gfn)), "the page stays in memory");
            assertEquals(0, swap.usedSlots());
            assertArrayEquals(contents(5), read(cpu, 5));
            cpu.run(() -> cpu.writeLong(LoggedGuest.page(5), 99)); // and stays writable
            assertEquals(99, g.vm.readPhysicalLong(gfn << 12));

            assertTrue(g.vm.swapOut(gfn));
            swap.failNextReads(1);
            assertThrows(SwapException.class, () -> read(cpu, 5), "the access that touched it fails");
            assertEquals(P2mEntry.SWAPPED, P2mEntry.kind(g.vm.physicalMap().entry(gfn)), "the page stays on swap");
            assertEquals(1, swap.usedSlots());
            assertEquals(99, cpu.readLong(LoggedGuest.page(5)), "the next touch brings it in");
            assertEquals(0, swap.usedSlots());
        }
    }

    @Test
    void sharedFramesAndShadowedTablesAreNeverSwappedAndParavirtualIsRefused() {
        try (Host host = Host.create(96L << 20)) {
            host.attachSwap(SwapDevice.create(dir.resolve("swap"), 64));
            Vm a = host.createVm(VmConfig.of(1L << 20));
            Vm b = host.createVm(VmConfig.of(1L << 20));
            a.writePhysical(0, contents(1), 0, 4096);
            b.writePhysical(0, contents(1), 0, 4096);
            assertTrue(host.share(a, 0, b, 0));
            assertFalse(a.swapOut(0), "a shared frame stays");
            assertFalse(a.swapOut(5), "a frame never populated has nothing to swap");

            LoggedGuest shadow = new LoggedGuest(host, PagingMode.SHADOW, 1, 1);
            long root = shadow.space.root() >>> 12;
            assertFalse(shadow.vm.swapOut(root), "a guest table the engine shadows stays");

            LoggedGuest pv = new LoggedGuest(host, PagingMode.PARAVIRTUAL, 1, 1);
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> pv.vm.swapOut(pv.gfnOfPage[0]));
            assertTrue(e.getMessage().contains("paravirtual"), e.getMessage());
            assertEquals(0, host.swap().usedSlots());
        }
    }

    @Test
    void aFullDeviceAndAMissingOneAreClearErrorsThatLeaveThePage() {
        try (Host host = Host.create(96L << 20)) {
            Vm vm = host.createVm(VmConfig.of(1L << 20));
            vm.writePhysical(0, contents(0), 0, 4096);
            IllegalStateException none = assertThrows(IllegalStateException.class, () -> vm.swapOut(0));
            assertTrue(none.getMessage().contains("no swap device"), none.getMessage());
            SwapDevice swap = SwapDevice.create(dir.resolve("swap"), 2);
            host.attachSwap(swap);
            assertThrows(IllegalStateException.class, () -> host.attachSwap(swap));
            long slots = swap.slots();
            for (int p = 0; p < slots; p++) {
                vm.writePhysical((long) (p + 1) << 12, contents(p + 1), 0, 4096);
                assertTrue(vm.swapOut(p + 1));
            }
            SwapException full = assertThrows(SwapException.class, () -> vm.swapOut(0));
            assertTrue(full.getMessage().contains("full"), full.getMessage());
            byte[] seen = new byte[4096];
            vm.readPhysical(0, seen, 0, 4096);
            assertArrayEquals(contents(0), seen);
        }
        assertThrows(IllegalArgumentException.class, () -> SwapDevice.create(dir.resolve("s0"), 0));
        SwapException badPath = assertThrows(SwapException.class, () -> SwapDevice.create(dir.resolve("missing/dir/swap"), 4));
        assertTrue(badPath.getMessage().contains("missing/dir/swap"), badPath.getMessage());
    }

    /** A swap file removed while mapped keeps its contents (its inode lives with the mapping): nothing is lost. */
    @Test
    void aSwapFileRemovedWhileInUseLosesNothing() throws Exception {
        try (Host host = Host.create(96L << 20)) {
            Path file = dir.resolve("swap");
            host.attachSwap(SwapDevice.create(file, 64));
            LoggedGuest g = guest(host, PagingMode.NESTED, 1);
            assertTrue(g.vm.swapOut(g.gfnOfPage[1]));
            Files.delete(file);
            assertTrue(g.vm.swapOut(g.gfnOfPage[2]));
            assertArrayEquals(contents(1), read(g.vm.vcpu(0), 1));
            assertArrayEquals(contents(2), read(g.vm.vcpu(0), 2));
        }
    }

    @Test
    void slotsAreTakenLockFreeByManyThreadsWithoutDuplicates() throws Exception {
        try (SwapDevice swap = SwapDevice.create(dir.resolve("swap"), 4096)) {
            java.util.concurrent.ConcurrentHashMap<Long, Boolean> taken = new java.util.concurrent.ConcurrentHashMap<>();
            Thread[] threads = new Thread[4];
            java.util.concurrent.atomic.AtomicBoolean duplicate = new java.util.concurrent.atomic.AtomicBoolean();
            for (int t = 0; t < threads.length; t++) {
                threads[t] = new Thread(() -> {
                    for (long s = swap.allocate(); s >= 0; s = swap.allocate()) {
                        if (taken.put(s, true) != null) {
                            duplicate.set(true);
                        }
                    }
                });
                threads[t].start();
            }
            for (Thread t : threads) {
                t.join();
            }
            assertFalse(duplicate.get());
            assertEquals(swap.slots(), taken.size());
            assertEquals(-1, swap.allocate());
            swap.free(17);
            assertEquals(17, swap.allocate());
            assertThrows(IllegalStateException.class, () -> {
                swap.free(18);
                swap.free(18);
            });
        }
    }

    /** A balloon that takes a page on swap gives up its contents: the slot is freed, the page ballooned. */
    @Test
    void aSwappedPageTheBalloonTakesLeavesTheSwapDevice() {
        try (Host host = Host.create(96L << 20)) {
            host.attachSwap(SwapDevice.create(dir.resolve("swap"), 64));
            Vm vm = host.createVm(VmConfig.of(1L << 20));
            vm.writePhysical(4096, contents(1), 0, 4096);
            assertTrue(vm.swapOut(1));
            vm.balloon().inflate(1);
            assertEquals(0, host.swap().usedSlots());
            assertEquals(P2mEntry.BALLOONED, P2mEntry.kind(vm.physicalMap().entry(1)));
            assertEquals(0, vm.swappedFrames());
        }
    }

    /**
     * Closing a host is its frame audit: a swap slot still taken once every VM is gone (here one taken
     * straight from the device and never given back) is reported, and the host's memory is freed all the
     * same; a host whose VMs swapped and were destroyed closes cleanly.
     */
    @Test
    void closingAHostReportsASwapSlotLeftTaken() throws Exception {
        Host clean = Host.create(16L << 20);
        clean.attachSwap(SwapDevice.create(dir.resolve("clean"), 64));
        Vm vm = clean.createVm(VmConfig.of(4L << 20));
        vm.writePhysicalLong(0, 7);
        assertTrue(vm.swapOut(0));
        clean.close(); // the destroy frees the slot: nothing leaked

        Host host = Host.create(16L << 20);
        SwapDevice swap = SwapDevice.create(dir.resolve("leaky"), 64);
        host.attachSwap(swap);
        assertTrue(swap.allocate() >= 0);
        IllegalStateException e = assertThrows(IllegalStateException.class, host::close);
        assertTrue(e.getMessage().contains("1 swap slots"), e.getMessage());
        assertEquals(0, host.vms().size());
    }
}
