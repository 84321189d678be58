package io.vmpage.engine.sharing;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
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
import io.vmpage.engine.sharing.PageSharingScanner.Outcome;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLongArray;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** The ESX page-sharing scanner, through the public API: what it merges, what it never merges, its rate. */
class PageSharingScannerTest {
    private static final int PAGE = 4096;

    /** Page {@code p}'s contents in a guest booted "from the same image": the same for every VM with the same seed. */
    private static byte[] image(long seed, int p) {
        byte[] bytes = new byte[PAGE];
        new SplittableRandom(seed * 1_000_003 + p).nextBytes(bytes);
        return bytes;
    }

    private static void writeImage(Vm vm, long seed, int pages) {
        for (int p = 0; p < pages; p++) {
            vm.writePhysical((long) p * PAGE, image(seed, p), 0, PAGE);
        }
    }

    private static void assertImage(Vm vm, long seed, int pages) {
        byte[] seen = new byte[PAGE];
        for (int p = 0; p < pages; p++) {
            vm.readPhysical((long) p * PAGE, seen, 0, PAGE);
            assertTrue(java.util.Arrays.equals(image(seed, p), seen), vm + " page " + p + " lost its contents");
        }
    }

    private static void scanAll(PageSharingScanner scanner, Vm vm, int pages) {
        for (int p = 0; p < pages; p++) {
            scanner.scan(vm, p);
        }
    }

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void vmsBootedFromOneImageInOneDomainShareItAndEachStillReadsItsOwnPages() throws Exception {
        int pages = 256;
        try (Host host = Host.create(64L << 20)) {
            long freeAtStart = host.frames().freeFrames();
            List<Vm> vms = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                Vm vm = host.createVm(VmConfig.of(4L << 20));
                vm.setSharingDomain("tenant-a");
                writeImage(vm, 7, pages); // the common image
                writeImage(vm, 100 + i, 8); // ...whose first 8 pages each VM overwrote with its own data
                vms.add(vm);
            }
            long privateBefore = vms.stream().mapToLong(Vm::populatedFrames).sum();
            PageSharingScanner scanner = host.startPageSharing(SharingConfig.unlimited().withSeed(5));
            long expectedSaved = 2L * (pages - 8) * PAGE; // three copies of 248 pages become one
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (scanner.stats().bytesSaved() < expectedSaved && System.nanoTime() < deadline) {
                Thread.sleep(20);
            }
            host.stopPageSharing();
            SharingStats stats = scanner.stats();
            assertEquals(expectedSaved, stats.bytesSaved(), "shared: " + stats);
            assertEquals(pages - 8, stats.sharedFrames());
            assertEquals(3L * (pages - 8), stats.sharers());
            assertEquals(privateBefore - 3L * (pages - 8), vms.stream().mapToLong(Vm::populatedFrames).sum(),
                "each VM gave up its copies of the image: 248 shared frames stand for 744 private ones");
            assertTrue(stats.metadataBytes() <= host.memory().size() / 200, "table " + stats.metadataBytes() + " bytes: under 0.5% of memory");
            assertEquals(0, host.agentErrors());
            for (int i = 0; i < 3; i++) {
                Vm vm = vms.get(i);
                byte[] own = new byte[PAGE];
                for (int p = 0; p < 8; p++) {
                    vm.readPhysical((long) p * PAGE, own, 0, PAGE);
                    assertTrue(java.util.Arrays.equals(image(100 + i, p), own), "its own page " + p);
                }
                byte[] seen = new byte[PAGE];
                for (int p = 8; p < pages; p++) {
                    vm.readPhysical((long) p * PAGE, seen, 0, PAGE);
                    assertTrue(java.util.Arrays.equals(image(7, p), seen), "image page " + p);
                }
            }
            vms.forEach(host::destroyVm);
            assertEquals(freeAtStart, host.frames().freeFrames(), "every frame, shared or not, is back");
        }
    }

    @Test
    void vmsOfDifferentDomainsNeverShareButAVmSharesWithinItself() {
        try (Host host = Host.create(64L << 20)) {
            PageSharingScanner scanner = new PageSharingScanner(host, SharingConfig.unlimited());
            Vm own1 = host.createVm(VmConfig.of(1L << 20)); // default: a domain of its own (ESX's salting)
            Vm own2 = host.createVm(VmConfig.of(1L << 20));
            Vm tenantA = host.createVm(VmConfig.of(1L << 20));
            Vm tenantB = host.createVm(VmConfig.of(1L << 20));
            tenantA.setSharingDomain("a");
            tenantB.setSharingDomain("b");
            for (Vm vm : List.of(own1, own2, tenantA, tenantB)) {
                writeImage(vm, 3, 32);
            }
            for (int pass = 0; pass < 2; pass++) {
                for (Vm vm : List.of(own1, own2, tenantA, tenantB)) {
                    for (int p = 0; p < 32; p++) {
                        assertNotEquals(Outcome.MERGED, scanner.scan(vm, p), vm + " page " + p + " merged across domains");
                    }
                }
            }
            assertEquals(0, host.sharedFrames());

            own1.writePhysical(40L * PAGE, image(3, 5), 0, PAGE); // the same VM holds page 5's contents twice
            assertEquals(Outcome.MERGED, scanner.scan(own1, 40));
            assertEquals(own1.physicalMap().machineFrame(5), own1.physicalMap().machineFrame(40));
            assertEquals(1, host.sharedFrames());
            assertThrows(IllegalArgumentException.class, () -> tenantA.setSharingDomain(" "));
        }
    }

    @Test
    void everyZeroPageOfEveryVmMapsOneZeroFrameAndAWriteGetsItsOwnCopy() {
        try (Host host = Host.create(64L << 20)) {
            PageSharingScanner scanner = new PageSharingScanner(host, SharingConfig.unlimited());
            Vm a = host.createVm(VmConfig.of(1L << 20));
            Vm b = host.createVm(VmConfig.of(1L << 20)); // another domain: the zero page is shared all the same
            for (Vm vm : List.of(a, b)) {
                for (int p = 0; p < 100; p++) {
                    vm.writePhysicalLong((long) p * PAGE, 0); // populated, all zeros (a guest's freed pages)
                }
            }
            long privateBefore = a.populatedFrames() + b.populatedFrames();
            scanAll(scanner, a, 100);
            scanAll(scanner, b, 100);
            SharingStats stats = scanner.stats();
            assertEquals(1, stats.sharedFrames());
            assertEquals(200, stats.sharers());
            assertEquals(199, stats.zeroMerges(), "the first zero page is the hint, every other one merged");
            assertEquals(privateBefore - 200, a.populatedFrames() + b.populatedFrames(), "one frame stands for 200");

            b.writePhysicalLong(7L * PAGE + 8, 42); // copy-on-write: b's page 7 alone changes
            assertEquals(42, b.readPhysicalLong(7L * PAGE + 8));
            assertEquals(0, a.readPhysicalLong(7L * PAGE + 8));
            assertEquals(0, b.readPhysicalLong(8L * PAGE + 8));
            assertEquals(1, scanner.stats().copyOnWriteBreaks());
            assertEquals(199, scanner.stats().sharers());
        }
    }

    @Test
    void aHintWhosePageChangedSinceItWasHashedIsDroppedNotMerged() {
        try (Host host = Host.create(64L << 20)) {
            PageSharingScanner scanner = new PageSharingScanner(host, SharingConfig.unlimited());
            Vm a = host.createVm(VmConfig.of(1L << 20));
            Vm b = host.createVm(VmConfig.of(1L << 20));
            Vm c = host.createVm(VmConfig.of(1L << 20));
            for (Vm vm : List.of(a, b, c)) {
                vm.setSharingDomain("one");
                vm.writePhysical(3L * PAGE, image(9, 3), 0, PAGE);
            }
            assertEquals(Outcome.HINTED, scanner.scan(a, 3));
            a.writePhysicalLong(3L * PAGE, 1); // a's page changes after it was hashed
            assertEquals(Outcome.HINTED, scanner.scan(b, 3), "the stale hint is dropped and b's page hinted instead");
            assertEquals(1, scanner.stats().staleHints());
            assertEquals(0, host.sharedFrames());
            assertEquals(Outcome.MERGED, scanner.scan(c, 3), "c merges with b's hint");
            assertEquals(b.physicalMap().machineFrame(3), c.physicalMap().machineFrame(3));
            assertNotEquals(a.physicalMap().machineFrame(3), b.physicalMap().machineFrame(3));
            assertEquals(1, a.readPhysicalLong(3L * PAGE));
            assertEquals(Outcome.HINTED, scanner.scan(a, 3), "a's page, changed, hashes to a new key: a new hint");
        }
    }

    @Test
    void paravirtualVmsAreSkippedAndRefusedClearlyWhileShadowOnesShare() {
        try (Host host = Host.create(64L << 20)) {
            PageSharingScanner scanner = new PageSharingScanner(host, SharingConfig.unlimited());
            Vm pv = host.createVm(VmConfig.of(1L << 20).withPaging(PagingMode.PARAVIRTUAL));
            Vm shadow = host.createVm(VmConfig.of(1L << 20).withPaging(PagingMode.SHADOW));
            Vm nested = host.createVm(VmConfig.of(1L << 20));
            shadow.writePhysicalLong(0, 0);
            nested.writePhysicalLong(0, 0);
            assertEquals(Outcome.SKIPPED, scanner.scan(pv, 0));
            assertEquals(Outcome.HINTED, scanner.scan(nested, 0));
            assertEquals(Outcome.MERGED, scanner.scan(shadow, 0), "shadow paging shares too (ESX's own mode)");
            IllegalArgumentException refused = assertThrows(IllegalArgumentException.class, () -> host.share(pv, 0, nested, 0));
            assertTrue(refused.getMessage().contains("Xen does not share PV memory"), refused.getMessage());
            assertThrows(IllegalArgumentException.class, () -> scanner.scan(nested, 1 << 20));
            try (Host other = Host.create(16L << 20)) {
                assertThrows(IllegalArgumentException.class, () -> scanner.scan(other.createVm(VmConfig.of(1L << 20)), 0));
            }
        }
    }

    /** ESX 2 scans 50 pages/s per VM and 200 pages/s in all, so that scanning costs next to nothing. */
    @Test
    @Timeout(value = 30, unit = TimeUnit.SECONDS)
    void theScanRateIsBoundedPerVmAndInAll() throws Exception {
        try (Host host = Host.create(128L << 20)) {
            Vm one = host.createVm(VmConfig.of(8L << 20));
            writeImage(one, 1, 2048);
            PageSharingScanner scanner = host.startPageSharing(SharingConfig.defaults());
            long start = System.nanoTime();
            Thread.sleep(1000);
            double seconds = (System.nanoTime() - start) / 1e9;
            long alone = scanner.stats().pagesScanned();
            assertTrue(alone <= 50 * seconds + 3 && alone >= 10, alone + " pages in " + seconds + " s from one VM (50/s)");
            host.stopPageSharing();

            for (int i = 0; i < 5; i++) {
                writeImage(host.createVm(VmConfig.of(8L << 20)), 2 + i, 2048);
            }
            PageSharingScanner all = host.startPageSharing(SharingConfig.defaults());
            start = System.nanoTime();
            Thread.sleep(1000);
            seconds = (System.nanoTime() - start) / 1e9;
            long six = all.stats().pagesScanned();
            assertTrue(six <= 200 * seconds + 11 && six >= 60, six + " pages in " + seconds + " s from six VMs (200/s in all)");
            assertThrows(IllegalStateException.class, () -> host.startPageSharing(SharingConfig.defaults()));
        }
        assertThrows(IllegalArgumentException.class, () -> new SharingConfig(-1, 0, 0));
        assertThrows(IllegalArgumentException.class, () -> new SharingConfig(0, Double.NaN, 0));
    }

    @Test
    void closingTheHostStopsItsScanner() throws Exception {
        Host host = Host.create(16L << 20);
        host.startPageSharing(SharingConfig.unlimited());
        assertTrue(threadNamed("page-sharing-scanner"));
        host.close();
        assertNull(host.pageSharing());
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        while (threadNamed("page-sharing-scanner") && System.nanoTime() < deadline) {
            Thread.sleep(10);
        }
        assertTrue(!threadNamed("page-sharing-scanner"), "the scanner thread ended with its host");
    }

    private static boolean threadNamed(String name) {
        return Thread.getAllStackTraces().keySet().stream().anyMatch(t -> t.getName().equals(name) && t.isAlive());
    }

    /**
     * Two VMs of one domain start from the same pages. Their writers never pause, storing to the first
     * eight words of random pages (a hot set takes most stores): most stores write a word's image value again (the page stays or becomes
     * equal to the other VM's again, and the store breaks its sharing), one in eight a value tagged with
     * its VM. Meanwhile a scanner thread runs the scanner's step over
     * both VMs' pages as fast as it can, so merges and copy-on-write breaks race all the time. Each VM
     * ends with exactly what its own writers wrote, word for word, never the other VM's data.
     */
    static java.util.stream.Stream<org.junit.jupiter.params.provider.Arguments> sharingModesAndDrivers() {
        return java.util.stream.Stream.of(PagingMode.NESTED, PagingMode.SHADOW)
            .flatMap(m -> java.util.Arrays.stream(Driving.values()).map(d -> org.junit.jupiter.params.provider.Arguments.of(m, d)));
    }

    @ParameterizedTest
    @org.junit.jupiter.params.provider.MethodSource("sharingModesAndDrivers")
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void writersRacingTheScannerOnlyEverSeeTheirOwnVmsData(PagingMode mode, Driving driving) throws Exception {
        int pages = 1024;
        int writers = 1; // one per VM: with more runnable threads than cores every remote flush waits for a preempted vCPU
        try (Host host = Host.create(96L << 20);
             LoggedGuest a = new LoggedGuest(host, mode, writers, pages);
             LoggedGuest b = new LoggedGuest(host, mode, writers, pages)) {
            List<LoggedGuest> guests = List.of(a, b);
            for (LoggedGuest g : guests) {
                g.vm.setSharingDomain("racing");
                Vcpu cpu = g.vm.vcpu(0);
                cpu.run(() -> {
                    for (int p = 0; p < pages; p++) {
                        for (int w = 0; w < 512; w++) {
                            cpu.writeLong(LoggedGuest.page(p) + 8L * w, initial(p, w));
                        }
                    }
                });
            }
            // journal[g]: the last value stored per (page, word); writer w of a VM owns the words of parity w
            AtomicLongArray[] journal = {new AtomicLongArray(pages * 512), new AtomicLongArray(pages * 512)};
            for (AtomicLongArray j : journal) {
                for (int i = 0; i < j.length(); i++) {
                    j.set(i, initial(i / 512, i % 512));
                }
            }
            PageSharingScanner scanner = new PageSharingScanner(host, SharingConfig.unlimited());
            java.util.concurrent.atomic.AtomicBoolean stop = new java.util.concurrent.atomic.AtomicBoolean();
            java.util.concurrent.atomic.AtomicReference<Throwable> scanFailure = new java.util.concurrent.atomic.AtomicReference<>();
            Thread scanning = new Thread(() -> {
                SplittableRandom r = new SplittableRandom(11);
                try {
                    while (!stop.get()) {
                        LoggedGuest g = guests.get(r.nextInt(2));
                        scanner.scan(g.vm, g.gfnOfPage[r.nextBoolean() ? r.nextInt(16) : r.nextInt(pages)]); // the hot set half the time
                    }
                } catch (Throwable t) {
                    scanFailure.set(t);
                }
            }, "scanning");
            List<VcpuWriters> running = new ArrayList<>();
            for (int gi = 0; gi < 2; gi++) {
                int g = gi;
                running.add(VcpuWriters.start(guests.get(g).vm, writers, driving, (cpu, n) -> {
                    SplittableRandom r = new SplittableRandom((g * 31L + cpu.index()) * 1_000_003L + n);
                    // a hot set of 16 pages takes 99% of the stores; the other pages are written now and then, so
                    // they stay unwritten for the length of a merge and get merged, and a later store breaks that
                    int page = r.nextInt(100) != 0 ? r.nextInt(16) : 16 + r.nextInt(pages - 16);
                    int word = 2 * r.nextInt(4) + cpu.index(); // the first 8 words: pages come back to the image often
                    long value = r.nextInt(8) != 0 ? initial(page, word) : ((long) (g + 1) << 56) | n;
                    cpu.writeLong(LoggedGuest.page(page) + 8L * word, value);
                    journal[g].set(page * 512 + word, value);
                }));
            }
            scanning.start();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while ((scanner.stats().merges() < 200 || scanner.stats().copyOnWriteBreaks() < 200) && System.nanoTime() < deadline) {
                Thread.sleep(20);
            }
            for (VcpuWriters w : running) {
                w.close();
            }
            stop.set(true);
            scanning.join();
            assertNull(scanFailure.get(), () -> "the scanner failed: " + scanFailure.get());
            SharingStats stats = scanner.stats();
            // The loop aims at 200 of each; the floor leaves room for a slow machine (attached shadow writers took 11 s here)
            assertTrue(stats.merges() >= 20 && stats.copyOnWriteBreaks() >= 20, "the race happened: " + stats);
            for (int g = 0; g < 2; g++) {
                Vm vm = guests.get(g).vm;
                for (int p = 0; p < pages; p++) {
                    long gpa = guests.get(g).gfnOfPage[p] << 12;
                    for (int w = 0; w < 512; w++) {
                        long seen = vm.readPhysicalLong(gpa + 8L * w);
                        assertEquals(journal[g].get(p * 512 + w), seen, "VM " + (g + 1) + " page " + p + " word " + w
                            + (seen >>> 56 == 2 - g ? ": the other VM's data" : ""));
                    }
                }
            }
        }
    }

    private static long initial(int page, int word) {
        return 0x1111_0000_0000L | ((long) page << 16) | word;
    }
}
