package io.vmpage.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.dirty.DirtySnapshot;
import io.vmpage.engine.dirty.DirtyTracking;
import io.vmpage.engine.memory.FrameDescriptor;
import io.vmpage.engine.memory.P2mEntry;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Copy-on-write page sharing between VMs, and dirty logging of the writes that break it. */
class PageSharingTest {
    private static final int PAGES = 16;

    /** The paging modes that share frames (nested: KSM over EPT; shadow: ESX's own), with each way of driving a vCPU. */
    static java.util.stream.Stream<org.junit.jupiter.params.provider.Arguments> sharingModesAndDrivers() {
        return java.util.stream.Stream.of(PagingMode.NESTED, PagingMode.SHADOW)
            .flatMap(m -> java.util.Arrays.stream(Driving.values()).map(d -> org.junit.jupiter.params.provider.Arguments.of(m, d)));
    }

    /** The sharing modes with each dirty-tracking method they support (shadow paging has no D-bit logging). */
    static java.util.stream.Stream<org.junit.jupiter.params.provider.Arguments> sharingModesAndMethods() {
        return java.util.stream.Stream.of(PagingMode.NESTED, PagingMode.SHADOW)
            .flatMap(m -> java.util.Arrays.stream(DirtyTracking.values())
                .filter(t -> m == PagingMode.NESTED || t != DirtyTracking.DIRTY_BITS)
                .map(t -> org.junit.jupiter.params.provider.Arguments.of(m, t)));
    }

    private static void fill(Vcpu cpu, int page, long seed) {
        cpu.run(() -> {
            for (int i = 0; i < 512; i++) {
                cpu.writeLong(LoggedGuest.page(page) + 8L * i, seed * 31 + i);
            }
        });
    }

    private static long read(Vcpu cpu, int page, int word) {
        return cpu.readLong(LoggedGuest.page(page) + 8L * word);
    }

    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    void equalFramesShareOneMachineFrameAndAWriteGetsAPrivateCopy(PagingMode mode) {
        try (Host host = Host.create(96L << 20);
             LoggedGuest a = new LoggedGuest(host, mode, 1, PAGES);
             LoggedGuest b = new LoggedGuest(host, mode, 1, PAGES)) {
            Vcpu ca = a.vm.vcpu(0);
            Vcpu cb = b.vm.vcpu(0);
            fill(ca, 3, 42);
            fill(cb, 7, 42);
            long free = host.frames().freeFrames();
            long privateB = b.vm.populatedFrames();
            assertTrue(host.share(a.vm, a.gfnOfPage[3], b.vm, b.gfnOfPage[7]));
            assertEquals(free + 1, host.frames().freeFrames(), "one machine frame returned to the host");
            assertEquals(1, host.sharedFrames());
            assertEquals(privateB - 1, b.vm.populatedFrames());
            assertEquals(a.vm.physicalMap().machineFrame(a.gfnOfPage[3]), b.vm.physicalMap().machineFrame(b.gfnOfPage[7]));
            assertEquals(42 * 31 + 5, read(cb, 7, 5));
            assertEquals(42 * 31 + 5, read(ca, 3, 5));

            cb.run(() -> cb.writeLong(LoggedGuest.page(7) + 40, -1)); // b's write: b gets a copy
            assertEquals(1, cb.exitCount(ExitReason.COPY_ON_WRITE));
            assertEquals(-1, read(cb, 7, 5));
            assertEquals(42 * 31 + 5, read(ca, 3, 5), "a still sees the shared contents");
            assertEquals(42 * 31 + 6, read(cb, 7, 6), "the copy kept the rest of the page");
            assertEquals(1, host.sharedFrames(), "a still maps the shared frame alone");

            ca.run(() -> ca.writeLong(LoggedGuest.page(3), 9)); // the last mapper takes the frame over: no copy
            assertEquals(0, host.sharedFrames());
            assertEquals(9, read(ca, 3, 0));
            assertEquals(free, host.frames().freeFrames());
        }
    }

    /** The guest-physical map says, per guest frame, whether it maps a shared frame (P2mEntry.SHARED). */
    @Test
    void theGuestPhysicalMapTracksWhichGuestFramesMapASharedFrame() {
        try (Host host = Host.create(96L << 20);
             LoggedGuest a = new LoggedGuest(host, PagingMode.NESTED, 1, PAGES);
             LoggedGuest b = new LoggedGuest(host, PagingMode.NESTED, 1, PAGES)) {
            Vcpu ca = a.vm.vcpu(0);
            Vcpu cb = b.vm.vcpu(0);
            fill(ca, 3, 42);
            fill(cb, 7, 42);
            long ga = a.gfnOfPage[3];
            long gb = b.gfnOfPage[7];
            assertEquals(P2mEntry.PRIVATE, P2mEntry.kind(a.vm.physicalMap().entry(ga)));
            assertTrue(host.share(a.vm, ga, b.vm, gb));
            long shared = a.vm.physicalMap().machineFrame(ga);
            assertEquals(P2mEntry.sharedFrame(shared), a.vm.physicalMap().entry(ga));
            assertEquals(P2mEntry.sharedFrame(shared), b.vm.physicalMap().entry(gb));

            cb.run(() -> cb.writeLong(LoggedGuest.page(7), 1)); // b gets a copy
            long copy = b.vm.physicalMap().machineFrame(gb);
            assertTrue(copy != shared);
            assertEquals(P2mEntry.privateFrame(copy), b.vm.physicalMap().entry(gb));
            assertEquals(P2mEntry.sharedFrame(shared), a.vm.physicalMap().entry(ga), "a still maps the shared frame");

            ca.run(() -> ca.writeLong(LoggedGuest.page(3), 1)); // the last mapper takes the frame over
            assertEquals(P2mEntry.privateFrame(shared), a.vm.physicalMap().entry(ga));
        }
    }

    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    void differentFramesStayPrivateAndWritable(PagingMode mode) {
        try (Host host = Host.create(96L << 20);
             LoggedGuest a = new LoggedGuest(host, mode, 1, PAGES);
             LoggedGuest b = new LoggedGuest(host, mode, 1, PAGES)) {
            fill(a.vm.vcpu(0), 1, 1);
            fill(b.vm.vcpu(0), 1, 2);
            assertFalse(host.share(a.vm, a.gfnOfPage[1], b.vm, b.gfnOfPage[1]));
            assertEquals(0, host.sharedFrames());
            Vcpu ca = a.vm.vcpu(0);
            ca.run(() -> ca.writeLong(LoggedGuest.page(1), 77));
            assertEquals(77, read(ca, 1, 0));
            assertEquals(0, ca.exitCount(ExitReason.COPY_ON_WRITE));
        }
    }

    @Test
    void hostStoresAndDiscardsBreakSharingWithoutTouchingTheOtherVm() {
        try (Host host = Host.create(96L << 20);
             LoggedGuest a = new LoggedGuest(host, PagingMode.NESTED, 1, PAGES);
             LoggedGuest b = new LoggedGuest(host, PagingMode.NESTED, 1, PAGES)) {
            fill(a.vm.vcpu(0), 2, 5);
            fill(b.vm.vcpu(0), 2, 5);
            fill(b.vm.vcpu(0), 3, 5);
            assertTrue(host.share(a.vm, a.gfnOfPage[2], b.vm, b.gfnOfPage[2]));
            assertTrue(host.share(a.vm, a.gfnOfPage[2], b.vm, b.gfnOfPage[3]), "a third mapper joins");
            assertEquals(1, host.sharedFrames());
            a.vm.writePhysicalLong(a.gfnOfPage[2] << 12, 123); // device emulation writes a's page
            assertEquals(123, read(a.vm.vcpu(0), 2, 0));
            assertEquals(5 * 31, read(b.vm.vcpu(0), 2, 0));
            assertTrue(b.vm.discardFrame(b.gfnOfPage[2]));
            assertEquals(0, read(b.vm.vcpu(0), 2, 0), "discarded: zeros");
            assertEquals(5 * 31 + 1, read(b.vm.vcpu(0), 3, 1), "the last sharer still reads the shared contents");
        }
    }

    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"PARAVIRTUAL"})
    void sharingNeedsNestedOrShadowPaging(PagingMode mode) {
        try (Host host = Host.create(96L << 20);
             LoggedGuest a = new LoggedGuest(host, PagingMode.NESTED, 1, 1);
             LoggedGuest b = new LoggedGuest(host, mode, 1, 1)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> host.share(a.vm, a.gfnOfPage[0], b.vm, b.gfnOfPage[0]));
            assertTrue(e.getMessage().contains("Xen does not share PV memory"), e.getMessage());
        }
    }

    /** The write that breaks sharing is a write like any other for the dirty log, with every method. */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.MethodSource("sharingModesAndMethods")
    void dirtyLoggingReportsWritesThatBreakSharing(PagingMode mode, DirtyTracking how) {
        try (Host host = Host.create(96L << 20);
             LoggedGuest a = new LoggedGuest(host, mode, 1, PAGES);
             LoggedGuest b = new LoggedGuest(host, mode, 1, PAGES)) {
            Vcpu ca = a.vm.vcpu(0);
            fill(ca, 4, 8);
            fill(b.vm.vcpu(0), 4, 8);
            DirtyLog log = a.vm.dirtyLog();
            log.enable(how);
            DirtySnapshot snapshot = new DirtySnapshot(a.vm.physicalMap().frames());
            log.harvest(snapshot);
            assertTrue(host.share(a.vm, a.gfnOfPage[4], b.vm, b.gfnOfPage[4]));
            log.harvest(snapshot);
            assertFalse(snapshot.isDirty(a.gfnOfPage[4]), "merging changes no guest-visible byte");
            ca.run(() -> ca.writeLong(LoggedGuest.page(4) + 8, 1));
            assertEquals(1, ca.exitCount(ExitReason.COPY_ON_WRITE));
            log.harvest(snapshot);
            assertTrue(snapshot.isDirty(a.gfnOfPage[4]), "the copy-on-write break is reported");
            assertEquals(8 * 31, read(b.vm.vcpu(0), 4, 0));
        }
    }

    /**
     * Writer vCPUs in two VMs write the same seeded sequence (so their pages keep becoming equal) while a
     * sharer thread merges random page pairs: each VM must read back exactly what it wrote, and no frame
     * may leak. Bounded: 400 merge attempts, at most 20 s; seeded.
     */
    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    @Timeout(60)
    void mergesRacingWithWritersNeverMixTheVmsData(PagingMode mode) throws Exception {
        int pages = 128;
        try (Host host = Host.create(96L << 20);
             LoggedGuest a = new LoggedGuest(host, mode, 1, pages);
             LoggedGuest b = new LoggedGuest(host, mode, 1, pages)) {
            LoggedGuest[] guests = {a, b};
            long[][][] expected = new long[2][pages][8];
            AtomicReference<Throwable> failure = new AtomicReference<>();
            AtomicBoolean stop = new AtomicBoolean();
            Thread[] writers = new Thread[2];
            for (int g = 0; g < 2; g++) {
                int me = g;
                writers[g] = new Thread(() -> {
                    Vcpu cpu = guests[me].vm.vcpu(0);
                    SplittableRandom random = new SplittableRandom(99); // the same sequence in both VMs
                    cpu.attachThread();
                    try {
                        for (int p = 0; p < pages; p++) {
                            for (int w = 0; w < 8; w++) {
                                cpu.writeLong(LoggedGuest.page(p) + 8L * w, 0);
                            }
                            for (int w = 8; w < 512; w++) {
                                cpu.writeLong(LoggedGuest.page(p) + 8L * w, 0);
                            }
                        }
                        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
                        while (!stop.get() && System.nanoTime() < deadline) {
                            int p = random.nextInt(pages);
                            int w = random.nextInt(8);
                            long v = random.nextInt(8) == 0 ? me + 1 : 0; // mostly zero: pages keep becoming equal
                            cpu.writeLong(LoggedGuest.page(p) + 8L * w, v);
                            expected[me][p][w] = v;
                            if (cpu.readLong(LoggedGuest.page(p) + 8L * w) != v) {
                                throw new AssertionError("VM " + me + " page " + p + " lost its own write");
                            }
                            java.util.concurrent.locks.LockSupport.parkNanos(10_000); // leave the sharer windows to merge in
                        }
                    } catch (Throwable t) {
                        failure.compareAndSet(null, t);
                    } finally {
                        cpu.detachThread();
                    }
                });
                writers[g].start();
            }
            SplittableRandom random = new SplittableRandom(7);
            long merged = 0;
            long attempts = 0;
            while (writers[0].isAlive() || writers[1].isAlive()) {
                attempts++;
                boolean ok = (host.share(a.vm, a.gfnOfPage[random.nextInt(pages)], b.vm, b.gfnOfPage[random.nextInt(pages)]));
                if (ok) {
                    merged++;
                }
                if (attempts >= 400) {
                    stop.set(true); // enough merges raced with the writers (bounded by the writers' deadline too)
                }
            }
            for (Thread t : writers) {
                t.join();
            }
            assertNull(failure.get(), () -> "writer failed: " + failure.get());
            assertTrue(merged > 0, "some merges succeeded");
            for (int g = 0; g < 2; g++) {
                Vcpu cpu = guests[g].vm.vcpu(0);
                for (int p = 0; p < pages; p++) {
                    long[] words = new long[8];
                    for (int w = 0; w < 8; w++) {
                        words[w] = read(cpu, p, w);
                    }
                    assertArrayEquals(expected[g][p], words, "VM " + g + " page " + p);
                }
            }
            long sharedBefore = host.sharedFrames();
            host.destroyVm(a.vm);
            host.destroyVm(b.vm);
            assertEquals(0, host.sharedFrames(), "every shared frame freed with its last mapper (had " + sharedBefore + ")");
            assertEquals(host.frames().frames() - 1, host.frames().freeFrames(), "no frame leaked");
        }
    }

    /**
     * A merge racing the first mapper's own copy-on-write break: VM a's writers store without pause the
     * bytes its page already holds (so the pages stay equal and merges keep succeeding), while the
     * main thread merges a's page with b's, then stores into b's page from the host. If a's write took
     * the frame back as its private frame after a's leaf turned copy-on-write and b was then pointed at
     * it, b's host store lands in a's page. Bounded: 3 s or 100,000 merges; then closing the host must
     * free every frame exactly once.
     */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.MethodSource("sharingModesAndDrivers")
    @Timeout(60)
    void aMergeNeverGivesAnotherVmTheFrameTheFirstMapperTookBack(PagingMode mode, Driving driving) throws Exception {
        // Every merge's flush waits for an attached writer's next access: one that wrote the merged page
        // each time would win every merge, so the attached writer writes it one time in 1024 (and other
        // pages in between, never pausing). One-off writers are not waited for; two of them writing the
        // page back to back hit the window within about a second on two cores.
        boolean attached = driving == Driving.ATTACHED;
        int writers = attached ? 1 : 2;
        try (Host host = Host.create(96L << 20);
             LoggedGuest a = new LoggedGuest(host, mode, writers, PAGES);
             LoggedGuest b = new LoggedGuest(host, mode, 1, PAGES)) {
            long gfnA = a.gfnOfPage[5];
            long gfnB = b.gfnOfPage[5]; // both pages hold 5 in word 0 and zeros elsewhere
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(3);
            int merges = 0;
            VcpuWriters.Write write = (cpu, n) -> {
                if (!attached || (n & 1023) == 0) {
                    cpu.writeLong(LoggedGuest.page(5), 5); // the same bytes: the pages stay equal
                } else {
                    cpu.writeLong(LoggedGuest.page(6 + (int) (n & 7)) + 8 * (n & 511), n);
                }
            };
            try (VcpuWriters running = VcpuWriters.start(a.vm, writers, driving, write)) {
                for (int i = 0; i < 100_000 && System.nanoTime() < deadline; i++) {
                    if (host.share(a.vm, gfnA, b.vm, gfnB)) {
                        merges++;
                    }
                    b.vm.writePhysicalLong((gfnB << 12) + 8, 0xBAD); // b's page only
                    assertEquals(0, a.vm.readPhysicalLong((gfnA << 12) + 8), "a store to VM b's page landed in VM a's (merge " + i + ")");
                    b.vm.writePhysicalLong((gfnB << 12) + 8, 0);
                }
            }
            assertTrue(merges > 10, "merges: " + merges);
            host.destroyVm(a.vm);
            host.destroyVm(b.vm);
            assertEquals(0, host.sharedFrames());
            assertEquals(host.frames().frames() - 1, host.frames().freeFrames(), "every frame freed exactly once");
        }
    }

    /**
     * One frame shared by more guest frames than its reference count can hold: merges beyond
     * {@link Host#MAX_SHARERS} are refused, so discarding the sharers never frees the frame while a
     * guest frame still maps it (a freed frame would be handed out next, for instance as another VM's
     * EPT root).
     */
    @Test
    @Timeout(120)
    void sharersOfOneFrameAreCappedSoTheFrameOutlivesEveryMapping() {
        int frames = (1 << 16) + 2; // one past what a 16-bit reference count holds
        try (Host host = Host.create(((long) frames << 12) + (64L << 20))) {
            Vm vm = host.createVm(VmConfig.of((long) frames << 12).withPaging(PagingMode.NESTED));
            byte[] page = new byte[4096];
            java.util.Arrays.fill(page, (byte) 0x5A);
            for (long gfn = 0; gfn < frames; gfn++) {
                vm.writePhysical(gfn << 12, page, 0, page.length);
            }
            int merged = 0;
            for (long gfn = 1; gfn < frames; gfn++) {
                if (host.share(vm, 0, vm, gfn)) {
                    merged++;
                }
            }
            assertEquals(Host.MAX_SHARERS - 1, merged, "merges beyond the cap are refused");
            long shared = vm.physicalMap().machineFrame(0);
            assertEquals(Host.MAX_SHARERS, FrameDescriptor.refs(host.frames().descriptor(shared)));
            for (long gfn = 1; gfn < frames; gfn++) {
                vm.discardFrame(gfn);
            }
            assertEquals(1, host.sharedFrames(), "guest frame 0 still maps the shared frame");
            Vm next = host.createVm(VmConfig.of(1L << 20).withPaging(PagingMode.NESTED));
            next.writePhysicalLong(0, -1); // takes freed frames: never the one frame 0 still maps
            assertEquals(0x5A5A5A5A5A5A5A5AL, vm.readPhysicalLong(8), "the shared frame was never freed under its last mapper");
        }
    }

    /**
     * Under EPT dirty-bit logging the only record of a write is the leaf's D bit: a merge that replaces
     * that leaf must log the page, or the write (made just before the merge) is never reported.
     */
    @Test
    void aMergeUnderDirtyBitLoggingReportsTheWriteItsLeafRecorded() {
        try (Host host = Host.create(96L << 20);
             LoggedGuest a = new LoggedGuest(host, PagingMode.NESTED, 1, PAGES);
             LoggedGuest b = new LoggedGuest(host, PagingMode.NESTED, 1, PAGES)) {
            fill(b.vm.vcpu(0), 6, 3);
            Vcpu ca = a.vm.vcpu(0);
            fill(ca, 6, 4);
            DirtyLog log = a.vm.dirtyLog();
            log.enable(DirtyTracking.DIRTY_BITS);
            DirtySnapshot snapshot = new DirtySnapshot(a.vm.physicalMap().frames());
            log.harvest(snapshot);
            fill(ca, 6, 3); // a's write makes the pages equal; only the leaf's D bit records it
            assertTrue(host.share(a.vm, a.gfnOfPage[6], b.vm, b.gfnOfPage[6]));
            log.harvest(snapshot);
            assertTrue(snapshot.isDirty(a.gfnOfPage[6]), "the write just before the merge is reported");
        }
    }

    /**
     * Host-side stores (device emulation, a migration's destination) racing merges: a host thread keeps
     * storing into VM a's page, now a value that makes it differ from b's, now the original one back,
     * while the main thread merges the two pages. A store that lands between the merge's compare and its
     * remap would make the shared frame carry a's new bytes into VM b. B's page must never change, and a
     * must end with what its last store wrote. Bounded: 2 s or 50,000 merges.
     */
    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    @Timeout(60)
    void hostStoresRacingMergesNeverReachTheOtherVm(PagingMode mode) throws Exception {
        try (Host host = Host.create(96L << 20);
             LoggedGuest a = new LoggedGuest(host, mode, 1, PAGES);
             LoggedGuest b = new LoggedGuest(host, mode, 1, PAGES)) {
            long gfnA = a.gfnOfPage[9];
            long gfnB = b.gfnOfPage[9]; // both hold 9 in word 0, zeros elsewhere
            AtomicBoolean stop = new AtomicBoolean();
            AtomicReference<Throwable> failure = new AtomicReference<>();
            long[] last = new long[1];
            Thread writer = new Thread(() -> {
                try {
                    for (long n = 0; !stop.get(); n++) {
                        long v = (n & 1) == 0 ? 0 : n; // zero keeps the pages equal, n makes them differ
                        a.vm.writePhysicalLong((gfnA << 12) + 24, v);
                        last[0] = v;
                    }
                } catch (Throwable t) {
                    failure.compareAndSet(null, t);
                }
            }, "host-writer-a");
            writer.start();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(2);
            int merges = 0;
            try {
                for (int i = 0; i < 50_000 && System.nanoTime() < deadline; i++) {
                    if (host.share(a.vm, gfnA, b.vm, gfnB)) {
                        merges++;
                    }
                    long seen = b.vm.readPhysicalLong((gfnB << 12) + 24);
                    assertEquals(0, seen, "VM a's host store reached VM b's page (merge " + i + ")");
                }
            } finally {
                stop.set(true);
                writer.join();
            }
            assertNull(failure.get(), () -> "writer failed: " + failure.get());
            assertTrue(merges > 10, "merges: " + merges);
            assertEquals(last[0], a.vm.readPhysicalLong((gfnA << 12) + 24), "a keeps its last host store");
            assertEquals(9, b.vm.readPhysicalLong(gfnB << 12));
        }
    }

    /**
     * Guest page tables in shared frames: two VMs whose bootloaders built the same tables (not walked yet)
     * share the table frames. The first walk through one of them sets A/D bits in it: under nested paging
     * those are writes for the EPT (Intel SDM: the processor's A/D updates to guest paging structures are
     * write accesses), so they exit and break sharing like any write; under shadow paging the engine's own
     * walk breaks it first (the engine would set A/D in the table, shadow it and emulate the guest's writes
     * to it). Either way the other VM's tables never see the A bits of this VM's walk. Under shadow paging
     * a table the engine shadows already is not merged at all.
     */
    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    void aGuestTableInASharedFrameGetsAPrivateCopyBeforeAWalkWritesIt(PagingMode mode) {
        try (Host host = Host.create(96L << 20)) {
            long va = 0x7f00_0000_0000L;
            Vm[] vms = new Vm[2];
            io.vmpage.mmu.PageTables[] tables = new io.vmpage.mmu.PageTables[2];
            for (int i = 0; i < 2; i++) {
                vms[i] = host.createVm(VmConfig.of(16L << 20).withPaging(mode));
                tables[i] = vms[i].guestPageTables(8L << 20, 9L << 20);
                tables[i].map(va, 0x1000, io.vmpage.mmu.Pte.SHIFT_4K, io.vmpage.mmu.Pte.P | io.vmpage.mmu.Pte.RW);
            }
            long root = tables[0].root() >>> 12;
            assertEquals(root, tables[1].root() >>> 12, "both bootloaders put the root at the same place");
            long firstTable = 8L << 8; // guest-physical 8 MiB: the root, then one table per level
            for (long gfn = firstTable; gfn < firstTable + 4; gfn++) {
                assertTrue(host.share(vms[0], gfn, vms[1], gfn), "table frame " + gfn + " shares while no walk used it");
            }
            byte[] before = new byte[4096 * 4];
            vms[1].readPhysical(firstTable << 12, before, 0, before.length);

            Vcpu cpu = vms[0].vcpu(0);
            cpu.loadCr3(tables[0].root());
            cpu.writeLong(va, 42); // walks all four tables, setting A (and D in the leaf)
            assertEquals(42, vms[0].readPhysicalLong(0x1000));
            byte[] after = new byte[4096 * 4];
            vms[1].readPhysical(firstTable << 12, after, 0, after.length);
            assertArrayEquals(before, after, "the other VM's tables never got this VM's A/D bits");
            for (long gfn = firstTable; gfn < firstTable + 4; gfn++) {
                assertEquals(P2mEntry.PRIVATE, P2mEntry.kind(vms[0].physicalMap().entry(gfn)), "table " + gfn + " is private again");
            }
            assertTrue(cpu.exitCount(ExitReason.COPY_ON_WRITE) >= 4);

            if (mode == PagingMode.SHADOW) { // now shadowed: the engine refuses to merge it again
                assertFalse(host.share(vms[0], root, vms[1], root));
            }
        }
    }
}
