package io.vmpage.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * A destroyed VM's vCPUs are retired: a stale {@link Vcpu} handle fails with a clear exception and
 * never reaches a frame that the host has handed to the next VM, whether the handle is used for one-off
 * accesses afterwards or its thread is running it (attached) while the VM is destroyed.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class VmDestroyTest {
    private static final int PAGES = 64;

    /** Fills every frame of {@code vm} with {@code pattern} from the host side and returns a copy. */
    private static byte[] fillAll(Vm vm, byte pattern) {
        byte[] bytes = new byte[(int) vm.memorySize()];
        java.util.Arrays.fill(bytes, pattern);
        vm.writePhysical(0, bytes, 0, bytes.length);
        return bytes;
    }

    private static byte[] memoryOf(Vm vm) {
        byte[] bytes = new byte[(int) vm.memorySize()];
        vm.readPhysical(0, bytes, 0, bytes.length);
        return bytes;
    }

    @ParameterizedTest
    @EnumSource(PagingMode.class)
    void aStaleVcpuHandleFaultsCleanlyAndNeverTouchesTheNextVmsFrames(PagingMode mode) {
        try (Host host = Host.create(64L << 20)) {
            LoggedGuest old = new LoggedGuest(host, mode, 1, PAGES);
            Vcpu stale = old.vm.vcpu(0);
            stale.run(() -> stale.writeLong(LoggedGuest.page(1), 1)); // TLB warm
            host.destroyVm(old.vm);
            Vm next = host.createVm(VmConfig.of(56L << 20).withPaging(PagingMode.NESTED)); // takes the freed frames
            byte[] expected = fillAll(next, (byte) 0x77);

            for (int p = 0; p < PAGES; p++) {
                long va = LoggedGuest.page(p);
                IllegalStateException e = assertThrows(IllegalStateException.class, () -> stale.writeLong(va, -1));
                assertTrue(e.getMessage().contains("destroyed"), e.getMessage());
                assertThrows(IllegalStateException.class, () -> stale.readLong(va));
                assertThrows(IllegalStateException.class, () -> stale.run(() -> stale.writeLong(va, -1)));
            }
            assertThrows(IllegalStateException.class, () -> stale.loadCr3(0x1000));
            assertThrows(IllegalStateException.class, () -> stale.invlpg(LoggedGuest.page(0)));
            assertThrows(IllegalStateException.class, () -> old.vm.writePhysicalLong(0, 1));
            assertArrayEquals(expected, memoryOf(next), "a stale vCPU of the destroyed VM wrote into the next VM");
        }
    }

    /**
     * The VM is destroyed while a writer thread runs its vCPU flat out: the destroy waits for the writer
     * to let go, the writer's next access fails, and nothing it stores lands after the frames were freed.
     */
    @ParameterizedTest
    @EnumSource(Driving.class)
    void destroyingAVmWhileItsVcpuWritesStopsTheWriterBeforeTheFramesAreReused(Driving driving) throws Exception {
        for (PagingMode mode : PagingMode.values()) {
            try (Host host = Host.create(64L << 20)) {
                LoggedGuest old = new LoggedGuest(host, mode, 1, PAGES);
                Vcpu cpu = old.vm.vcpu(0);
                AtomicReference<Throwable> ended = new AtomicReference<>();
                AtomicLong writes = new AtomicLong();
                Thread writer = writeUntilItFails(cpu, driving, ended, writes);
                host.destroyVm(old.vm);
                Vm next = host.createVm(VmConfig.of(56L << 20).withPaging(PagingMode.NESTED));
                byte[] expected = fillAll(next, (byte) 0x33);
                writer.join(10_000);
                assertNotNull(ended.get(), mode + ": the writer stopped");
                assertEquals(IllegalStateException.class, ended.get().getClass(), () -> mode + ": " + ended.get());
                assertArrayEquals(expected, memoryOf(next), mode + ": the destroyed VM's writer reached the next VM's memory");
                assertTrue(writes.get() > 1000);
            }
        }
    }

    /**
     * Closing the host while a vCPU runs flat out: the VMs are destroyed (their vCPUs retired) before
     * machine memory is unmapped, so the writer fails with a clear exception instead of the JVM crashing
     * on unmapped memory.
     */
    @ParameterizedTest
    @EnumSource(Driving.class)
    void closingTheHostUnderARunningVcpuStopsItBeforeMemoryGoes(Driving driving) throws Exception {
        Host host = Host.create(64L << 20);
        LoggedGuest g = new LoggedGuest(host, PagingMode.NESTED, 1, PAGES);
        Vcpu cpu = g.vm.vcpu(0);
        AtomicReference<Throwable> ended = new AtomicReference<>();
        Thread writer = writeUntilItFails(cpu, driving, ended, new AtomicLong());
        host.close();
        writer.join(10_000);
        assertEquals(IllegalStateException.class, ended.get() == null ? null : ended.get().getClass(), () -> String.valueOf(ended.get()));
    }

    /**
     * Starts a thread that writes through {@code cpu} without pausing until an access fails (stored in
     * {@code ended}), counting writes in {@code writes}; returns once 1000 writes are done.
     */
    private static Thread writeUntilItFails(Vcpu cpu, Driving driving, AtomicReference<Throwable> ended,
                                            AtomicLong writes) throws InterruptedException {
        CountDownLatch running = new CountDownLatch(1);
        Thread writer = new Thread(() -> {
            try {
                if (driving == Driving.ATTACHED) {
                    cpu.attachThread();
                }
                for (long n = 0; ; n++) {
                    cpu.writeLong(LoggedGuest.page((int) (n % PAGES)) + 8 * (n % 512), -1);
                    writes.lazySet(n + 1);
                    if (n == 1000) {
                        running.countDown();
                    }
                }
            } catch (Throwable t) {
                ended.set(t);
                running.countDown();
            }
        }, "writer");
        writer.start();
        assertTrue(running.await(10, TimeUnit.SECONDS), "the writer got going");
        assertEquals(null, ended.get(), "the writer runs");
        return writer;
    }

    /**
     * A long-running host (a migration destination, a lab creating a VM per experiment) outlives the
     * 16-bit id spaces: destroyed VMs give their VM id and their vCPUs' VPIDs back, and a freed id comes
     * back only after the others (Xen's domain ids), never while a VM holds it.
     */
    @org.junit.jupiter.api.Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void destroyedVmsGiveTheirIdsAndVpidsBackAndALiveVmKeepsItsOwn() {
        try (Host host = Host.create(16L << 20)) {
            Vm kept = host.createVm(VmConfig.of(1L << 20).withVcpus(2));
            kept.writePhysicalLong(0x1000, 0x5EED);
            long freeFrames = host.frames().freeFrames();
            java.util.Set<Integer> keptVpids = java.util.Set.of(kept.vcpu(0).vpid(), kept.vcpu(1).vpid());
            int previous = -1;
            for (int i = 0; i < 70_000; i++) { // more VMs, and twice as many vCPUs, than 16 bits number
                Vm vm = host.createVm(VmConfig.of(1L << 20).withVcpus(2));
                assertTrue(vm.id() != kept.id() && vm.id() > 0 && vm.id() <= 0xFFFF, "VM id " + vm.id());
                assertTrue(vm.id() != previous, "id " + previous + " came back at once");
                for (Vcpu v : vm.vcpus()) {
                    assertTrue(!keptVpids.contains(v.vpid()) && v.vpid() > 0 && v.vpid() <= 0xFFFF, "VPID " + v.vpid());
                }
                if (i % 10_000 == 0) { // now and then the VM runs: its frames are its own
                    mapped(vm, 0).writeLong(VA, i);
                    assertEquals(i, vm.readPhysicalLong(0x1000));
                }
                previous = vm.id();
                host.destroyVm(vm);
            }
            assertEquals(freeFrames, host.frames().freeFrames(), "frames leaked");
            assertEquals(0x5EED, kept.readPhysicalLong(0x1000));
            mapped(kept, 1).writeLong(VA + 0x1000, 7);
            assertEquals(7, kept.readPhysicalLong(0x2000));

        }
    }

    private static final long VA = 0x7f00_0000_0000L;

    /** vCPU {@code index} of {@code vm} with guest page tables mapping {@link #VA} to guest-physical 0x1000 (and the next page). */
    private static Vcpu mapped(Vm vm, int index) {
        io.vmpage.mmu.PageTables tables = vm.guestPageTables(vm.memorySize() - (32L << 10), vm.memorySize());
        tables.map(VA, 0x1000, io.vmpage.mmu.Pte.SHIFT_4K, io.vmpage.mmu.Pte.P | io.vmpage.mmu.Pte.RW);
        tables.map(VA + 0x1000, 0x2000, io.vmpage.mmu.Pte.SHIFT_4K, io.vmpage.mmu.Pte.P | io.vmpage.mmu.Pte.RW);
        Vcpu cpu = vm.vcpu(index);
        cpu.loadCr3(tables.root());
        return cpu;
    }
}
