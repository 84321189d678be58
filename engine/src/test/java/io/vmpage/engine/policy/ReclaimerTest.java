package io.vmpage.engine.policy;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.Driving;
import io.vmpage.engine.Host;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.VcpuWriters;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.swap.SwapDevice;
import io.vmpage.mmu.PageTables;
import io.vmpage.mmu.Pte;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The reclaimer on a host whose two admitted VMs, with equal shares, fill it to the hard state: one VM
 * touches all its memory without pause, the other is idle. With ESX's tax (tau 0.75) the idle VM's pages
 * are the ones swapped out; without it (tau 0) the VM with more pages pays, whichever it is, so the active
 * one gives pages too. Every page keeps its contents.
 */
class ReclaimerTest {
    private static final long MIB = 1L << 20;
    private static final long DATA = 31 * MIB + MIB / 2; // two of them leave ~1.3% of the host free: the hard state
    private static final long VA = 0x7f00_0000_0000L;

    @TempDir
    Path dir;

    /** An admitted VM whose DATA bytes are written (host-side) and mapped at VA by its own tables (2 MiB pages). */
    private static Vm filled(Host host, long seed) {
        Vm vm = host.admitVm(VmConfig.of(34 * MIB), new Allocation(0, 1000));
        PageTables tables = vm.guestPageTables(32 * MIB, 34 * MIB);
        for (long off = 0; off < 32 * MIB; off += 2 * MIB) {
            tables.map(VA + off, off, Pte.SHIFT_2M, Pte.P | Pte.RW);
        }
        vm.vcpu(0).loadCr3(tables.root());
        byte[] page = new byte[4096];
        for (long gpa = 0; gpa < DATA; gpa += 4096) {
            java.util.Arrays.fill(page, (byte) (seed + (gpa >> 12)));
            vm.writePhysical(gpa, page, 0, page.length);
        }
        return vm;
    }

    /**
     * Writes zero pages beyond {@link #filled}'s data, into {@code vms} one after another, until at most
     * {@code permille} per mille of the host's memory is free.
     */
    private static void fillUntilFree(Host host, long permille, Vm... vms) {
        byte[] page = new byte[4096];
        for (Vm vm : vms) {
            for (long gpa = DATA; gpa < vm.memorySize(); gpa += 4096) {
                if (host.frames().freeFrames() <= host.frames().frames() * permille / 1000) {
                    return;
                }
                vm.writePhysical(gpa, page, 0, page.length);
            }
        }
        throw new IllegalStateException("the VMs are full and the host still has " + host.frames().freeFrames() + " frames free");
    }

    /** Every 64th page of {@link #filled}'s data still holds what it was filled with. */
    private static void assertIntact(Vm vm, long seed) {
        byte[] page = new byte[4096];
        for (long gpa = 0; gpa < DATA; gpa += 64 * 4096) {
            vm.readPhysical(gpa, page, 0, page.length);
            assertEquals((byte) (seed + (gpa >> 12)), page[100], "guest-physical 0x" + Long.toHexString(gpa));
        }
    }

    @ParameterizedTest
    @ValueSource(doubles = {0.75, 0.0})
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void theIdleMemoryTaxDecidesWhoseMemoryIsReclaimed(double tau) throws Exception {
        try (Host host = Host.create(64 * MIB)) {
            host.attachSwap(SwapDevice.create(dir.resolve("swap"), 96 * MIB / 4096));
            Vm active = filled(host, 1);
            Vm idle = filled(host, 2);
            long pages = DATA >> 12;
            Reclaimer reclaimer = new Reclaimer(host, new Reclaimer.Config(1, tau, 100, 256, 7));
            try (VcpuWriters w = VcpuWriters.start(active, 1, Driving.ATTACHED, (cpu, n) -> {
                long gpa = (n % pages) << 12;
                cpu.writeLong(VA + gpa + 8, n); // round and round its memory, swapping back in what was swapped out
            })) {
                Thread.sleep(50);
                for (int period = 0; period < 10; period++) {
                    reclaimer.period();
                    Thread.sleep(40); // the writer goes round its 7680 pages several times per period
                }
            }
            assertTrue(reclaimer.state() != FreeMemoryState.HIGH || reclaimer.swappedPages() > 0, "the host was short: " + reclaimer.state());
            assertTrue(reclaimer.activeEstimate(idle) < 0.1, "idle estimated " + reclaimer.activeEstimate(idle));
            assertTrue(reclaimer.activeEstimate(active) > 0.5, "active estimated " + reclaimer.activeEstimate(active));
            long fromIdle = idle.swappedFrames();
            long swappedTotal = reclaimer.swappedPages();
            assertTrue(swappedTotal >= 2 * 256, "reclaimed " + swappedTotal + " pages");
            if (tau > 0) { // the first period presumes both active (a tie): at most that batch comes from the active VM
                assertTrue(fromIdle >= swappedTotal - 256, "with the tax the idle VM pays: " + fromIdle + " of " + swappedTotal);
            } else {
                assertTrue(swappedTotal - fromIdle >= 256, "without it the active VM pays too: " + (swappedTotal - fromIdle) + " of "
                    + swappedTotal);
            }
            assertIntact(idle, 2); // swapped or not
        }
    }

    /**
     * In the soft state the reclaimer asks balloons, but where a balloon cannot help (these VMs run no
     * balloon driver, so a request is never met) it swaps instead, as ESX pages only where ballooning
     * fails; the balloon is tried again later.
     */
    @org.junit.jupiter.api.Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void inTheSoftStateAVmWhoseBalloonCannotHelpIsSwappedInstead() throws Exception {
        try (Host host = Host.create(66 * MIB)) {
            host.attachSwap(SwapDevice.create(dir.resolve("swap"), 96 * MIB / 4096));
            Vm a = filled(host, 1);
            Vm b = filled(host, 2);
            fillUntilFree(host, 35, a, b); // 3.5% free: soft
            Reclaimer reclaimer = new Reclaimer(host, new Reclaimer.Config(1, 0.75, 100, 64, 9));
            reclaimer.period();
            assertEquals(FreeMemoryState.SOFT, reclaimer.state());
            assertEquals(64, reclaimer.balloonedPages(), "the first request goes to a balloon");
            assertEquals(0, reclaimer.swappedPages());
            for (int period = 0; period < 3 && reclaimer.state() == FreeMemoryState.SOFT; period++) {
                reclaimer.period();
            }
            assertTrue(reclaimer.swappedPages() > 0, "no balloon met its request: swapped " + reclaimer.swappedPages()
                + ", ballooned " + reclaimer.balloonedPages() + ", state " + reclaimer.state());
            assertEquals(0, a.balloon().actual() + b.balloon().actual(), "no driver: nothing ballooned");
        }
    }

    /**
     * A host whose swap device fails every write, with VMs that run no balloon driver, cannot leave the low
     * state: the reclaimer running as the host's agent meets each failed swap-out without an error of its
     * own (the page stays in memory), blocks the VMs, and stopping it lets them run again (nothing else
     * would). Every page keeps its contents.
     */
    @org.junit.jupiter.api.Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void stoppingTheReclaimerUnblocksTheVmsItBlocked() throws Exception {
        try (Host host = Host.create(64 * MIB)) {
            SwapDevice swap = SwapDevice.create(dir.resolve("swap"), 96 * MIB / 4096);
            host.attachSwap(swap);
            swap.failNextWrites(Integer.MAX_VALUE);
            Vm a = filled(host, 1);
            Vm b = filled(host, 2);
            fillUntilFree(host, 5, b, a); // 0.5% free: low
            Reclaimer running = host.startReclaimer(new Reclaimer.Config(1_000_000, 0.75, 10, 16, 4));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (!(a.paused() && b.paused()) && System.nanoTime() < deadline) {
                Thread.sleep(1);
            }
            assertTrue(a.paused() && b.paused(), "blocked in " + running.state());
            host.stopReclaimer();
            assertTrue(!a.paused() && !b.paused(), "running again once the reclaimer stopped");
            assertEquals(0, host.agentErrors());
            assertTrue(running.swapErrors() > 0, "every swap-out failed");
            assertEquals(0, a.swappedFrames() + b.swappedFrames());
            assertIntact(a, 1);
        }
    }

    /**
     * A paravirtual VM is reclaimed by its balloon alone, in the hard state too (the host cannot swap or
     * sample a PV guest's memory): its guest's driver gives the frames back, nothing of it goes to swap,
     * and the reclaimer meets no error.
     */
    @org.junit.jupiter.api.Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void aParavirtualVmGivesMemoryByItsBalloonAloneEvenWhenTheHostIsHard() throws Exception {
        try (Host host = Host.create(50 * MIB)) {
            host.attachSwap(SwapDevice.create(dir.resolve("swap"), 96 * MIB / 4096));
            Vm pv = host.admitVm(VmConfig.of(24 * MIB).withPaging(io.vmpage.engine.PagingMode.PARAVIRTUAL), new Allocation(0, 100));
            io.vmpage.engine.guest.GuestKernel kernel = io.vmpage.engine.guest.GuestKernel.boot(pv);
            Vcpu cpu = pv.vcpu(0);
            io.vmpage.engine.guest.GuestKernel.AddressSpace space = kernel.createAddressSpace(cpu);
            long heap = 16 * MIB;
            kernel.mmap(space, VA, heap, io.vmpage.engine.guest.GuestKernel.PROT_READ | io.vmpage.engine.guest.GuestKernel.PROT_WRITE);
            cpu.run(() -> {
                kernel.switchTo(cpu, space);
                for (long off = 0; off < heap; off += 4096) {
                    cpu.writeLong(VA + off, off);
                }
            });
            kernel.munmap(cpu, space, VA, heap); // freed inside the guest, still populated: what a balloon gives back
            Vm other = filled(host, 1);
            fillUntilFree(host, 15, other); // 1.5% free: hard
            long populated = pv.populatedFrames();
            Reclaimer reclaimer = new Reclaimer(host, new Reclaimer.Config(1, 0.75, 100, 256, 5));
            for (int period = 0; period < 6; period++) {
                reclaimer.period();
                kernel.balloon().service(cpu);
            }
            assertTrue(reclaimer.state() == FreeMemoryState.HARD || pv.balloon().framesFreed() > 0, "state " + reclaimer.state());
            assertEquals(1.0, reclaimer.activeEstimate(pv), "not sampled: counted fully active");
            assertTrue(pv.balloon().framesFreed() >= 256, "the balloon gave back " + pv.balloon().framesFreed());
            assertEquals(populated - pv.balloon().framesFreed(), pv.populatedFrames());
            assertEquals(0, pv.swappedFrames(), "nothing of the PV guest went to swap");
            assertEquals(0, other.swappedFrames(), "the PV guest, with fewer shares, was the victim every time");
        }
    }

    /**
     * Below the low threshold the reclaimer swaps and blocks every VM above its target until free memory
     * is back above the hard threshold; started with the host it runs on its own thread and stops with it.
     */
    @org.junit.jupiter.api.Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void inTheLowStateVmsAboveTheirTargetAreBlockedUntilMemoryIsBack() throws Exception {
        try (Host host = Host.create(64 * MIB)) {
            host.attachSwap(SwapDevice.create(dir.resolve("swap"), 96 * MIB / 4096));
            Vm a = filled(host, 1);
            Vm b = filled(host, 2);
            fillUntilFree(host, 5, b, a); // 0.5% free: low
            Reclaimer reclaimer = new Reclaimer(host, new Reclaimer.Config(1, 0.75, 100, 256, 3));
            reclaimer.period();
            assertEquals(FreeMemoryState.LOW, reclaimer.state());
            assertTrue(a.paused() && b.paused(), "both are above their target (min 0): blocked");
            for (int i = 0; i < 20 && reclaimer.state() == FreeMemoryState.LOW; i++) {
                reclaimer.period();
            }
            assertTrue(reclaimer.state() != FreeMemoryState.LOW, "still low after 20 periods");
            assertTrue(!a.paused() && !b.paused(), "unblocked once free memory is back");
            assertTrue(reclaimer.swappedPages() > 0);

            Reclaimer running = host.startReclaimer(new Reclaimer.Config(1_000_000, 0.75, 10, 16, 4));
            org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class,
                () -> host.startReclaimer(Reclaimer.Config.esx()));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (running.periods() < 5 && System.nanoTime() < deadline) {
                Thread.sleep(5);
            }
            assertTrue(running.periods() >= 5, "the agent ran " + running.periods() + " periods");
            host.stopReclaimer();
            assertEquals(null, host.reclaimer());
            assertEquals(0, host.agentErrors());
        }
    }
}
