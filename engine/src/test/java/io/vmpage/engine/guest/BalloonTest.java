package io.vmpage.engine.guest;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.Balloon;
import io.vmpage.engine.Host;
import io.vmpage.engine.LoggedGuest;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.mmu.MachineMemory;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** virtio-balloon: the host's target, the guest driver's inflate and deflate, and what a touch costs. */
class BalloonTest {
    private static final int PAGES = 512;

    /**
     * A guest that used 512 pages and freed them (munmap), so its free list holds populated frames: the
     * balloon takes them and the host gets their machine frames back; deflated, the guest uses them again.
     */
    @ParameterizedTest
    @EnumSource(PagingMode.class)
    void inflatingGivesTheGuestsFreedFramesBackToTheHostAndDeflatingLetsItUseThemAgain(PagingMode mode) {
        try (Host host = Host.create(96L << 20)) {
            long hostFreeAtStart = host.frames().freeFrames();
            LoggedGuest g = new LoggedGuest(host, mode, 1, PAGES);
            Vcpu cpu = g.vm.vcpu(0);
            g.kernel.munmap(cpu, g.space, LoggedGuest.HEAP, PAGES * 4096L); // the frames go back to the guest's free list, still populated
            long hostFree = host.frames().freeFrames();
            long populated = g.vm.populatedFrames();
            int guestFree = g.kernel.freeFrameCount();

            Balloon balloon = g.vm.balloon();
            balloon.setTarget(PAGES);
            assertEquals(PAGES, g.kernel.balloon().service(cpu));
            assertEquals(PAGES, balloon.actual());
            assertEquals(PAGES, g.kernel.balloon().pages());
            assertEquals(guestFree - PAGES, g.kernel.freeFrameCount(), "the guest never uses a ballooned page");
            // The last freed frames are taken first: the 512 the program used, every one populated.
            assertEquals(PAGES, balloon.framesFreed());
            assertEquals(hostFree + PAGES, host.frames().freeFrames(), "their machine frames are back in the host's free list");
            assertEquals(populated - PAGES, g.vm.populatedFrames());
            assertEquals(0, g.kernel.balloon().service(cpu), "at its target the driver has nothing to do");

            balloon.setTarget(PAGES / 4);
            assertEquals(-(PAGES - PAGES / 4), g.kernel.balloon().service(cpu));
            assertEquals(PAGES / 4, balloon.actual());
            assertEquals(guestFree - PAGES / 4, g.kernel.freeFrameCount());
            g.kernel.mmap(g.space, LoggedGuest.HEAP, PAGES * 4096L, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE);
            cpu.run(() -> {
                for (int p = 0; p < PAGES; p++) {
                    cpu.writeLong(LoggedGuest.page(p), p); // the guest uses its memory again, deflated pages among it
                }
            });
            for (int p = 0; p < PAGES; p++) {
                assertEquals(p, cpu.readLong(LoggedGuest.page(p)));
            }
            assertEquals(0, balloon.touchedWhileBallooned());

            balloon.setTarget(0);
            g.kernel.balloon().service(cpu);
            host.destroyVm(g.vm);
            assertEquals(hostFreeAtStart, host.frames().freeFrames(), "no frame leaked");
        }
    }

    /** The driver inflates only as far as the guest has free pages, and the host's target is checked. */
    @ParameterizedTest
    @EnumSource(PagingMode.class)
    void aBalloonStopsWhereTheGuestHasNoFreePageLeftAndBadTargetsAreRefused(PagingMode mode) {
        try (Host host = Host.create(96L << 20)) {
            LoggedGuest g = new LoggedGuest(host, mode, 1, 16);
            Vcpu cpu = g.vm.vcpu(0);
            int free = g.kernel.freeFrameCount();
            g.vm.balloon().setTarget(g.vm.physicalMap().frames());
            assertEquals(free, g.kernel.balloon().service(cpu));
            assertEquals(0, g.kernel.freeFrameCount());
            assertThrows(IllegalArgumentException.class, () -> g.vm.balloon().setTarget(-1));
            assertThrows(IllegalArgumentException.class, () -> g.vm.balloon().setTarget(g.vm.physicalMap().frames() + 1));
        }
    }

    /**
     * DEFLATE_ON_OOM: a guest whose balloon holds every free page still gets the memory it asks for, the
     * balloon giving pages back; without the feature the access that needs a page fails.
     */
    @ParameterizedTest
    @EnumSource(PagingMode.class)
    void aGuestShortOfMemoryTakesPagesBackFromItsBalloonWhenDeflateOnOomIsOn(PagingMode mode) {
        try (Host host = Host.create(96L << 20)) {
            LoggedGuest g = new LoggedGuest(host, mode, 1, 16);
            Vcpu cpu = g.vm.vcpu(0);
            g.vm.balloon().setTarget(g.vm.physicalMap().frames());
            g.kernel.balloon().service(cpu);
            int ballooned = g.kernel.balloon().pages();
            long va = 0x0000_7000_0000_0000L;
            g.kernel.mmap(g.space, va, 64 * 4096L, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE);
            cpu.run(() -> {
                for (int p = 0; p < 64; p++) {
                    cpu.writeLong(va + p * 4096L, p); // each first touch allocates a frame (and maybe a table)
                }
            });
            assertEquals(BalloonDriver.OOM_PAGES, g.kernel.balloon().deflatedOnOom());
            assertEquals(ballooned - BalloonDriver.OOM_PAGES, g.vm.balloon().actual());
            assertEquals(63, cpu.readLong(va + 63 * 4096L));

            g.kernel.balloon().setDeflateOnOom(false);
            g.kernel.balloon().service(cpu); // the target still asks for everything: the balloon takes the pages back
            long va2 = 0x0000_7100_0000_0000L;
            g.kernel.mmap(g.space, va2, 4096L, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE);
            assertThrows(io.vmpage.engine.GuestFaultException.class, () -> cpu.run(() -> cpu.writeLong(va2, 1)),
                "out of memory without the feature: the access fails, as an OOM-killed program's would");
        }
    }

    /** A guest that touches a ballooned page anyway (a guest bug) gets a fresh zero frame, and the count shows it. */
    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    void aBallooonedPageTouchedAnywayGetsAFreshZeroFrameAndIsCounted(PagingMode mode) {
        try (Host host = Host.create(96L << 20)) {
            LoggedGuest g = new LoggedGuest(host, mode, 1, 4);
            Vcpu cpu = g.vm.vcpu(0);
            long gfn = g.gfnOfPage[2];
            long gpa = gfn << MachineMemory.FRAME_SHIFT;
            cpu.run(() -> cpu.writeLong(LoggedGuest.page(2), 0x77)); // mapped in the guest, and populated
            long hostFree = host.frames().freeFrames();
            assertTrue(g.vm.balloon().inflate(gfn), "a buggy driver balloons a page its guest still maps"); // the device does as it is told
            assertEquals(hostFree + 1, host.frames().freeFrames());
            assertEquals(0, g.vm.readPhysicalLong(gpa), "a host read sees zeros and leaves the page in the balloon");
            assertEquals(0, g.vm.balloon().touchedWhileBallooned());
            assertEquals(0, cpu.readLong(LoggedGuest.page(2)), "the guest's touch: a fresh zero frame");
            assertEquals(1, g.vm.balloon().touchedWhileBallooned());
            cpu.run(() -> cpu.writeLong(LoggedGuest.page(2), 5));
            assertEquals(5, g.vm.readPhysicalLong(gpa));
            assertEquals(1, g.vm.balloon().touchedWhileBallooned());
        }
    }

    /**
     * Xen PV: the hypervisor takes a frame only once the guest's own tables no longer map it
     * (decrease_reservation). A buggy driver ballooning a page its guest still maps, writable or
     * read-only (a page table's direct-map entry), is refused, and nothing changes; discarding one is
     * refused the same way.
     */
    @org.junit.jupiter.api.Test
    void aParavirtualGuestsBalloonRefusesAPageItsTablesStillMap() {
        try (Host host = Host.create(96L << 20)) {
            LoggedGuest g = new LoggedGuest(host, PagingMode.PARAVIRTUAL, 1, 4);
            Vcpu cpu = g.vm.vcpu(0);
            long gfn = g.gfnOfPage[2];
            cpu.run(() -> cpu.writeLong(LoggedGuest.page(2), 0x77));
            long hostFree = host.frames().freeFrames();
            long populated = g.vm.populatedFrames();
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> g.vm.balloon().inflate(gfn));
            assertTrue(e.getMessage().contains("decrease_reservation") && e.getMessage().contains("still mapped"), e.getMessage());
            assertEquals(false, g.vm.discardFrame(gfn), "a discard takes no frame the guest still maps");
            long cr3 = cpu.mmu().registers().cr3(); // the PML4: a page table, and mapped read-only in the direct map
            long rootGfn = host.frames().guestFrame((cr3 & io.vmpage.mmu.Pte.ADDRESS_MASK) >>> MachineMemory.FRAME_SHIFT);
            assertThrows(IllegalStateException.class, () -> g.vm.balloon().inflate(rootGfn));
            assertEquals(false, g.vm.discardFrame(rootGfn));
            assertEquals(0, g.vm.balloon().actual());
            assertEquals(hostFree, host.frames().freeFrames());
            assertEquals(populated, g.vm.populatedFrames());
            assertEquals(0x77, cpu.readLong(LoggedGuest.page(2)), "the page is the guest's, as it was");
            g.kernel.munmap(cpu, g.space, LoggedGuest.HEAP, 4 * 4096L);
            g.vm.balloon().setTarget(g.kernel.freeFrameCount());
            long taken = g.kernel.balloon().service(cpu); // the driver unmaps each page from the direct map first
            assertEquals(g.vm.balloon().actual(), taken);
            assertTrue(g.vm.balloon().framesFreed() >= 4, "the heap's frames went back: " + g.vm.balloon().framesFreed());
        }
    }

    /**
     * Xen PV: a guest that populates a page its balloon holds (a guest bug: the balloon never gave it back)
     * gets a fresh zero frame, and the count shows it.
     */
    @org.junit.jupiter.api.Test
    void aParavirtualGuestPopulatingABallooonedPageGetsAFreshZeroFrameAndIsCounted() {
        try (Host host = Host.create(96L << 20)) {
            LoggedGuest g = new LoggedGuest(host, PagingMode.PARAVIRTUAL, 1, 4);
            Vcpu cpu = g.vm.vcpu(0);
            long gfn = g.gfnOfPage[2];
            cpu.run(() -> cpu.writeLong(LoggedGuest.page(2), 0x77));
            g.kernel.munmap(cpu, g.space, LoggedGuest.HEAP, 4 * 4096L);
            g.vm.balloon().setTarget(g.kernel.freeFrameCount());
            g.kernel.balloon().service(cpu);
            assertEquals(io.vmpage.engine.memory.P2mEntry.BALLOONED, io.vmpage.engine.memory.P2mEntry.kind(g.vm.physicalMap().entry(gfn)));
            long[] mfn = new long[1];
            cpu.run(() -> mfn[0] = cpu.hypercalls().populatePhysmap(gfn));
            assertTrue(mfn[0] > 0);
            assertEquals(1, g.vm.balloon().touchedWhileBallooned());
            assertEquals(0, g.vm.readPhysicalLong(gfn << MachineMemory.FRAME_SHIFT), "a fresh zero frame, not the old contents");
        }
    }

    /** The balloon's pages travel with the guest kernel's state: on the destination they are still the balloon's. */
    @ParameterizedTest
    @EnumSource(PagingMode.class)
    void theBalloonsPagesTravelWithTheKernelsState(PagingMode mode) {
        try (Host host = Host.create(96L << 20)) {
            LoggedGuest g = new LoggedGuest(host, mode, 1, 4);
            g.vm.balloon().setTarget(32);
            g.kernel.balloon().service(g.vm.vcpu(0));
            byte[] state = g.kernel.saveState();
            Vm copy = g.copyTo(host, gfn -> false);
            GuestKernel restored = GuestKernel.restore(copy, state);
            assertEquals(32, restored.balloon().pages());
            assertEquals(32, copy.balloon().actual());
            assertEquals(g.kernel.freeFrameCount(), restored.freeFrameCount());
        }
    }
}
