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

    static java.util.stream.Stream<org.junit.jupiter.params.provider.Arguments> modesAndDriving() {
        return java.util.Arrays.stream(PagingMode.values()).flatMap(m -> java.util.Arrays.stream(io.vmpage.engine.Driving.values())
            .map(d -> org.junit.jupiter.params.provider.Arguments.of(m, d)));
    }

    /**
     * A balloon inflating and deflating at seeded random targets while a writer that never pauses goes
     * round its heap on another vCPU, attached or one-off, in every paging mode, and the kernel's vCPU maps,
     * fills and unmaps a churn region around each service; another VM takes every frame the balloon gives
     * back and fills it with 0x55. No write is lost and none of the other VM's
     * bytes reaches the guest (a balloon that freed a frame still in use would show both), and every
     * frame comes back (Host.close's audit). Bounded: 150 services or 3 s.
     */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.MethodSource("modesAndDriving")
    @org.junit.jupiter.api.Timeout(value = 60, unit = java.util.concurrent.TimeUnit.SECONDS)
    void ballooningWhileAWriterRunsLosesNoWriteAndLeaksNoFrame(PagingMode mode, io.vmpage.engine.Driving driving) throws Exception {
        try (Host host = Host.create(128L << 20)) {
            LoggedGuest g = new LoggedGuest(host, mode, 2, 256);
            Vcpu kernelCpu = g.vm.vcpu(1);
            long scratch = 0x0000_7000_0000_0000L; // used and freed: the free list holds backed frames for the balloon
            g.kernel.mmap(g.space, scratch, 1024 * 4096L, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE);
            kernelCpu.run(() -> {
                for (int p = 0; p < 1024; p++) {
                    kernelCpu.writeLong(scratch + p * 4096L, p);
                }
            });
            g.kernel.munmap(kernelCpu, g.space, scratch, 1024 * 4096L);
            Vm other = host.createVm(VmConfig.of(32L << 20));
            java.util.concurrent.atomic.AtomicLongArray journal = new java.util.concurrent.atomic.AtomicLongArray(256);
            java.util.SplittableRandom random = new java.util.SplittableRandom(0xBA11 + mode.ordinal() * 2L + driving.ordinal());
            long otherGpa = 0;
            long freed;
            try (io.vmpage.engine.VcpuWriters w = io.vmpage.engine.VcpuWriters.start(g.vm, 1, driving, (cpu, n) -> {
                int p = (int) (n % 256);
                cpu.writeLong(LoggedGuest.page(p) + 8, n + 1);
                journal.set(p, n + 1);
            })) {
                long deadline = System.nanoTime() + 3_000_000_000L;
                for (int i = 0; i < 150 && System.nanoTime() < deadline; i++) {
                    int round = i;
                    g.kernel.mmap(g.space, scratch, 64 * 4096L, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE);
                    kernelCpu.run(() -> { // frames move between the free list, the balloon and use
                        for (int p = 0; p < 64; p++) {
                            kernelCpu.writeLong(scratch + p * 4096L, round * 64L + p);
                        }
                    });
                    g.vm.balloon().setTarget(random.nextInt(1500));
                    g.kernel.balloon().service(kernelCpu); // while the churned pages are in use
                    kernelCpu.run(() -> {
                        for (int p = 0; p < 64; p++) {
                            assertEquals(round * 64L + p, kernelCpu.readLong(scratch + p * 4096L), "a page in use, ballooned");
                        }
                    });
                    g.kernel.munmap(kernelCpu, g.space, scratch, 64 * 4096L);
                    for (long f = host.frames().freeFrames(); f > 64 && otherGpa < other.memorySize(); f--) {
                        other.writePhysicalLong(otherGpa, 0x5555_5555_5555_5555L); // the frames just given back, reused
                        otherGpa += 4096;
                    }
                }
                freed = g.vm.balloon().framesFreed();
            }
            Vcpu reader = g.vm.vcpu(0);
            for (int p = 0; p < 256; p++) {
                assertEquals(journal.get(p), reader.readLong(LoggedGuest.page(p) + 8), "page " + p + "'s last write");
                assertEquals(p, reader.readLong(LoggedGuest.page(p)), "page " + p + "'s first word");
            }
            assertTrue(freed > 0, "the balloon gave frames back: " + freed);
            assertEquals(0, g.vm.balloon().touchedWhileBallooned());
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
