package io.vmpage.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Pte;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLongArray;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;

/** Pausing and resuming a whole VM while its vCPUs write, throttling it, and moving its vCPU state. */
class VmPauseTest {
    private static final int WRITERS = 2;
    private static final int PAGES = 16;

    static List<Arguments> modesAndDrivings() {
        List<Arguments> all = new ArrayList<>();
        for (PagingMode mode : PagingMode.values()) {
            for (Driving driving : Driving.values()) {
                all.add(Arguments.of(mode, driving));
            }
        }
        return all;
    }

    private static VcpuWriters writers(LoggedGuest g, AtomicLongArray progress, Driving driving) {
        return VcpuWriters.start(g.vm, WRITERS, driving, (cpu, n) -> {
            cpu.writeLong(LoggedGuest.page(cpu.index() * (PAGES / WRITERS) + (int) (n % (PAGES / WRITERS))) + 8 * (n % 512), n);
            progress.set(cpu.index(), n + 1);
        });
    }

    private static void awaitProgress(AtomicLongArray progress, long[] beyond) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        for (int w = 0; w < WRITERS; w++) {
            while (progress.get(w) <= beyond[w] + 100) {
                assertTrue(System.nanoTime() < deadline, "writer " + w + " made no progress");
                Thread.sleep(1);
            }
        }
    }

    private static long[] snapshot(AtomicLongArray progress) {
        long[] p = new long[WRITERS];
        for (int w = 0; w < WRITERS; w++) {
            p[w] = progress.get(w);
        }
        return p;
    }

    /**
     * While paused, guest memory does not change at all (no store, no A/D update by a walk, no engine
     * write of a guest table), whichever way the writers drive their vCPUs; after resume they go on.
     */
    @ParameterizedTest
    @MethodSource("modesAndDrivings")
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void nothingWritesGuestMemoryWhilePausedAndTheWritersGoOnAfterResume(PagingMode mode, Driving driving) throws Exception {
        SplittableRandom random = new SplittableRandom(11);
        try (LoggedGuest g = new LoggedGuest(mode, WRITERS, PAGES)) {
            AtomicLongArray progress = new AtomicLongArray(WRITERS);
            try (VcpuWriters w = writers(g, progress, driving)) {
                awaitProgress(progress, new long[WRITERS]);
                for (int round = 0; round < 8; round++) {
                    Thread.sleep(random.nextInt(3));
                    g.vm.pause();
                    assertTrue(g.vm.paused());
                    byte[] first = g.memory();
                    long[] before = snapshot(progress);
                    Thread.sleep(5);
                    assertArrayEquals(first, g.memory(), "guest memory changed while paused (round " + round + ")");
                    long[] after = snapshot(progress);
                    for (int i = 0; i < WRITERS; i++) {
                        assertTrue(after[i] - before[i] <= 1, "writer " + i + " completed writes while paused");
                    }
                    g.vm.resume();
                    awaitProgress(progress, after);
                }
            }
        }
    }

    /**
     * A pause whose kick reaches a vCPU while it waits inside an exit (here for a frame another vCPU is
     * bringing in, which serves requests as it spins) still holds that vCPU once the exit ends: the
     * pause returns and the writer completes nothing until resume. Before the fix the kick was served
     * inside the exit and lost: an attached writer ran on and the pause waited forever; a one-off writer
     * went on writing into the paused VM.
     */
    @ParameterizedTest
    @MethodSource("modesAndDrivings")
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void aPauseServedWhileAVcpuWaitsInsideAnExitHoldsItWhenTheExitEnds(PagingMode mode, Driving driving) throws Exception {
        assumeTrue(mode != PagingMode.PARAVIRTUAL, "no fetch on fault in PV guests yet");
        try (LoggedGuest source = new LoggedGuest(mode, WRITERS, PAGES); Host host = Host.create(64L << 20)) {
            source.vm.pause();
            long remote = source.gfnOfPage[0];
            Vm vm = source.copyTo(host, gfn -> gfn == remote);
            vm.pause();
            vm.importState(source.vm.exportState());
            vm.resume();
            CountDownLatch fetching = new CountDownLatch(1);
            CountDownLatch arrive = new CountDownLatch(1);
            vm.setFrameFetcher((gfn, kind, payload, memory, frameAddress) -> {
                fetching.countDown();
                try {
                    assertTrue(arrive.await(30, TimeUnit.SECONDS));
                } catch (InterruptedException e) {
                    throw new IllegalStateException(e);
                }
                memory.putBytes(frameAddress, new byte[MachineMemory.FRAME_SIZE], 0, MachineMemory.FRAME_SIZE);
            });
            AtomicLongArray progress = new AtomicLongArray(WRITERS);
            try (VcpuWriters w = VcpuWriters.start(vm, WRITERS, driving, (cpu, n) -> {
                if (n == 0) { // vCPU 0 fetches the remote frame; vCPU 1 waits in its exit for the same frame
                    if (cpu.index() == 1) {
                        try {
                            assertTrue(fetching.await(30, TimeUnit.SECONDS));
                        } catch (InterruptedException e) {
                            throw new IllegalStateException(e);
                        }
                    }
                    cpu.writeLong(LoggedGuest.page(0) + 8 * cpu.index(), -1);
                } else {
                    cpu.writeLong(LoggedGuest.page(1 + cpu.index()), n);
                }
                progress.set(cpu.index(), n + 1);
            })) {
                assertTrue(fetching.await(30, TimeUnit.SECONDS));
                Thread.sleep(50); // vCPU 1 spins in its exit now
                Thread pauser = new Thread(vm::pause, "pauser");
                pauser.start();
                Thread.sleep(100); // both kicks posted; vCPU 1 served its own while it waited
                arrive.countDown();
                pauser.join(TimeUnit.SECONDS.toMillis(10));
                if (pauser.isAlive()) {
                    vm.flushRemoteTlbs(); // a fresh kick lets the pause complete, so the test can end
                    pauser.join();
                    vm.resume();
                    fail("the pause did not return: a vCPU served its kick inside an exit and ran on");
                }
                long[] before = snapshot(progress);
                Thread.sleep(20);
                long[] after = snapshot(progress);
                for (int i = 0; i < WRITERS; i++) {
                    assertTrue(after[i] - before[i] <= 1, "writer " + i + " completed writes while paused: " + before[i] + " -> " + after[i]);
                }
                vm.resume();
                awaitProgress(progress, after);
            }
        }
    }

    /**
     * A thread that ends while it still runs a vCPU (attached, never detached) leaves it in guest mode,
     * but it can make no access any more: a remote flush, a pause and a destroy do not wait for it.
     */
    @ParameterizedTest
    @EnumSource(PagingMode.class)
    @Timeout(value = 30, unit = TimeUnit.SECONDS)
    void aVcpuWhoseThreadDiedWhileRunningItHoldsUpNeitherAFlushNorAPauseNorADestroy(PagingMode mode) throws Exception {
        try (LoggedGuest g = new LoggedGuest(mode, WRITERS, PAGES)) {
            Vcpu cpu = g.vm.vcpu(1);
            Thread dies = new Thread(() -> {
                cpu.attachThread();
                cpu.writeLong(LoggedGuest.page(1), 7);
            }, "dies-attached");
            dies.start();
            dies.join();
            g.vm.flushRemoteTlbs();
            g.vm.pause();
            assertTrue(g.vm.paused());
            g.vm.resume();
            g.host.destroyVm(g.vm);
            assertFalse(g.host.vms().contains(g.vm));
        }
    }

    @Test
    void pausingTwiceResumingARunningVmAndPausingFromItsOwnVcpuAreErrors() {
        try (Host host = Host.create(64L << 20)) {
            Vm vm = host.createVm(VmConfig.of(16L << 20));
            assertThrows(IllegalStateException.class, vm::resume);
            vm.pause();
            IllegalStateException twice = assertThrows(IllegalStateException.class, vm::pause);
            assertTrue(twice.getMessage().contains("already paused"), twice.getMessage());
            vm.resume();
            assertFalse(vm.paused());
            vm.vcpu(0).run(() -> assertThrows(IllegalStateException.class, vm::pause));
        }
    }

    /** A VM destroyed while paused releases its parked writers with the stale-handle error, never a hang. */
    @ParameterizedTest
    @EnumSource(Driving.class)
    @Timeout(value = 30, unit = TimeUnit.SECONDS)
    void destroyingAPausedVmFailsItsWaitingWriters(Driving driving) throws Exception {
        try (LoggedGuest g = new LoggedGuest(PagingMode.NESTED, WRITERS, PAGES)) {
            AtomicLongArray progress = new AtomicLongArray(WRITERS);
            VcpuWriters w = writers(g, progress, driving);
            awaitProgress(progress, new long[WRITERS]);
            g.vm.pause();
            Thread.sleep(20); // a one-off writer between two accesses reaches its next one, which the pause holds
            g.host.destroyVm(g.vm);
            AssertionError failed = assertThrows(AssertionError.class, w::close);
            assertInstanceOf(IllegalStateException.class, failed.getCause());
        }
    }

    @Test
    @Timeout(value = 30, unit = TimeUnit.SECONDS)
    void aThrottleKeepsTheVcpusOutOfGuestModeForItsShareOfTheTime() throws Exception {
        try (LoggedGuest g = new LoggedGuest(PagingMode.NESTED, 1, PAGES)) {
            assertThrows(IllegalArgumentException.class, () -> g.vm.setThrottle(100));
            assertThrows(IllegalArgumentException.class, () -> g.vm.setThrottle(-1));
            Vcpu cpu = g.vm.vcpu(0);
            try (VcpuWriters w = VcpuWriters.start(g.vm, 1, Driving.ATTACHED, (c, n) -> c.writeLong(LoggedGuest.page(0), n))) {
                g.vm.setThrottle(50);
                assertEquals(50, g.vm.throttlePercent());
                Thread.sleep(100); // the first periods
                long held = cpu.throttledNanos();
                long start = System.nanoTime();
                Thread.sleep(800);
                double share = (double) (cpu.throttledNanos() - held) / (System.nanoTime() - start);
                assertTrue(share > 0.3 && share < 0.7, "held out " + share + " of the time at a 50% throttle");

                g.vm.setThrottle(0);
                Thread.sleep(50);
                held = cpu.throttledNanos();
                Thread.sleep(300);
                assertTrue(cpu.throttledNanos() - held < 30_000_000L, "still throttled after the throttle was lifted");
            }
        }
    }

    /**
     * The vCPU state moves to a VM on another host: with guest memory copied page by page, the
     * destination's vCPUs run the same guest (for shadow paging that means the guest's CR3, not the
     * shadow root the source's hardware ran on; for paravirtual paging, the page tables canonicalized to
     * guest frames, rebuilt on the destination's machine frames and pinned again, Xen's save/restore).
     */
    @ParameterizedTest
    @EnumSource(PagingMode.class)
    void exportedStateRunsTheSameGuestOnANewVm(PagingMode mode) {
        try (LoggedGuest source = new LoggedGuest(mode, WRITERS, PAGES);
             Host destinationHost = Host.create(64L << 20)) {
            assertThrows(IllegalStateException.class, source.vm::exportState, "not paused");
            source.vm.pause();
            VmState state = source.vm.exportState();
            assertEquals(source.vm.config(), state.config());
            assertTrue(state.vcpus().get(1).cr3Loaded());

            Vm destination = destinationHost.createVm(source.vm.config());
            byte[] page = new byte[MachineMemory.FRAME_SIZE];
            for (long gfn = 0; gfn < source.vm.physicalMap().frames(); gfn++) {
                if (source.vm.physicalMap().machineFrame(gfn) >= 0) {
                    source.vm.readPhysical(gfn << MachineMemory.FRAME_SHIFT, page, 0, page.length);
                    destination.writePhysical(gfn << MachineMemory.FRAME_SHIFT, page, 0, page.length);
                }
            }
            assertThrows(IllegalStateException.class, () -> destination.importState(state), "not paused");
            destination.pause();
            destination.importState(state);
            destination.resume();
            for (Vcpu cpu : destination.vcpus()) {
                cpu.run(() -> {
                    for (int p = 0; p < PAGES; p++) {
                        assertEquals(p, cpu.readLong(LoggedGuest.page(p)), "page " + p + " on " + cpu);
                    }
                });
            }
            destination.vcpu(1).writeLong(LoggedGuest.page(1), -1);
            assertEquals(-1, destination.vcpu(0).readLong(LoggedGuest.page(1)), "one guest: vCPU 0 sees vCPU 1's write");
            assertEquals(mode == PagingMode.PARAVIRTUAL, !state.pvTables().isEmpty(), "only PV carries its tables");
            if (mode == PagingMode.PARAVIRTUAL) {
                destination.pause();
                VmState again = destination.exportState();
                assertEquals(state.pvTables().size(), again.pvTables().size());
                for (int i = 0; i < state.pvTables().size(); i++) { // the same tables, in guest frames, on other machine frames
                    PvTable a = state.pvTables().get(i);
                    PvTable b = again.pvTables().get(i);
                    assertEquals(a.gfn(), b.gfn());
                    assertEquals(a.level(), b.level());
                    assertEquals(a.pinned(), b.pinned());
                    for (int e = 0; e < PvTable.ENTRIES; e++) { // A and D may have been set by the accesses since
                        assertEquals(a.entry(e) & ~(Pte.A | Pte.D), b.entry(e) & ~(Pte.A | Pte.D), "gfn " + a.gfn() + " entry " + e);
                    }
                }
                assertTrue(state.pvTables().stream().anyMatch(PvTable::pinned), "the guest kernel pins its L4s");
                assertEquals(state.vcpus().get(0).cr3(), again.vcpus().get(0).cr3(), "CR3 names the same guest frame");
                destination.resume();
            }
        }
    }

    /** A paravirtual state whose tables name guest frames the VM does not have is refused by name. */
    @Test
    void aParavirtualStateNamingFramesOutsideTheVmIsRefused() {
        try (LoggedGuest source = new LoggedGuest(PagingMode.PARAVIRTUAL, 1, 4); Host other = Host.create(64L << 20)) {
            source.vm.pause();
            VmState state = source.vm.exportState();
            PvTable first = state.pvTables().get(0);
            long[] entries = first.entries();
            int present = 0;
            while ((entries[present] & Pte.P) == 0) {
                present++;
            }
            entries[present] = (entries[present] & ~Pte.ADDRESS_MASK) | (1L << 40); // guest frame 2^28: far outside 24 MiB
            List<PvTable> tables = new java.util.ArrayList<>(state.pvTables());
            tables.set(0, new PvTable(first.gfn(), first.level(), first.pinned(), entries));
            Vm destination = other.createVm(source.vm.config());
            destination.pause();
            IllegalStateException refused = assertThrows(IllegalStateException.class,
                () -> destination.importState(new VmState(state.config(), state.vcpus(), tables)));
            assertTrue(refused.getMessage().contains("outside VM"), refused.getMessage());
        }
    }

    @Test
    void stateIsRefusedForAnotherConfigurationAndTablesForANonParavirtualVm() {
        try (Host host = Host.create(96L << 20)) {
            Vm a = host.createVm(VmConfig.of(16L << 20));
            Vm b = host.createVm(VmConfig.of(16L << 20).withVcpus(2));
            a.pause();
            b.pause();
            VmState state = a.exportState();
            assertThrows(IllegalArgumentException.class, () -> b.importState(state));
            assertThrows(IllegalArgumentException.class, () -> new VmState(state.config(), state.vcpus(),
                List.of(new PvTable(0, 4, true, new long[PvTable.ENTRIES]))), "page tables in a nested VM's state");
        }
    }
}
