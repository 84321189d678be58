package io.vmpage.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.memory.P2mEntry;
import io.vmpage.engine.swap.SwapDevice;
import java.nio.file.Path;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Whole pages placed by the host, through the public API: {@link Vm#copyFrameFrom} (one copy from a VM of
 * another host, what an in-process migration does per page), {@link Vm#isZeroFrame} and {@link Vm#zeroFrames}, and a whole-page
 * {@code writePhysical} into a frame never populated, which places the page filled instead of zeroing a
 * frame first. Every host is closed, so {@code Host.close}'s audit checks that no frame leaked.
 */
class HostCopyTest {
    @TempDir
    Path dir;

    private static byte[] contents(long seed) {
        byte[] bytes = new byte[4096];
        new SplittableRandom(seed).nextBytes(bytes);
        return bytes;
    }

    private static byte[] read(Vm vm, long gfn) {
        byte[] seen = new byte[4096];
        vm.readPhysical(gfn << 12, seen, 0, seen.length);
        return seen;
    }

    @ParameterizedTest
    @EnumSource(PagingMode.class)
    void aFrameCopiedFromAnotherHostsVmIsThatPageAndTheGuestReadsIt(PagingMode mode) {
        try (Host a = Host.create(64L << 20); Host b = Host.create(64L << 20)) {
            LoggedGuest target = new LoggedGuest(b, mode, 1, 2);
            Vm source = a.createVm(VmConfig.of(24L << 20).withPaging(mode));
            long gfn = target.gfnOfPage[1]; // a page the target guest maps
            byte[] page = contents(gfn);
            source.writePhysical(gfn << 12, page, 0, page.length);
            target.vm.copyFrameFrom(source, gfn);
            assertArrayEquals(page, read(target.vm, gfn), "the copy is the source's page");
            byte[] seen = new byte[4096];
            Vcpu cpu = target.vm.vcpu(0);
            cpu.run(() -> cpu.read(LoggedGuest.page(1), seen, 0, seen.length));
            assertArrayEquals(page, seen, "the guest reads the copied page through its own tables");

            long fresh = (20L << 20) >>> 12; // never populated on either side
            long populatedBefore = target.vm.populatedFrames();
            target.vm.copyFrameFrom(source, fresh);
            assertTrue(target.vm.isZeroFrame(fresh), "a source frame never populated copies as zeros");
            source.writePhysical(fresh << 12, page, 0, page.length);
            target.vm.copyFrameFrom(source, fresh);
            assertArrayEquals(page, read(target.vm, fresh));
            assertEquals(populatedBefore + 1, target.vm.populatedFrames(), "placed once, then stored over");
            assertTrue(source.discardFrame(fresh));
            target.vm.copyFrameFrom(source, fresh);
            assertTrue(target.vm.isZeroFrame(fresh), "a discarded source frame copies as zeros over the old copy");
            target.close();
        }
    }

    /**
     * A batch of every kind of page, in every paging mode: placed afresh, stored over a copy held already,
     * never populated at the source (zeros), on the source's swap (brought in), with a duplicate; each ends
     * as the source's page, and the target's dirty log sees every one.
     */
    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    void aBatchCopiesEveryKindOfPageAndLogsThem(PagingMode mode) throws Exception {
        try (Host a = Host.create(64L << 20); Host b = Host.create(64L << 20)) {
            a.attachSwap(SwapDevice.create(dir.resolve("swap"), 1024));
            Vm source = a.createVm(VmConfig.of(8L << 20).withPaging(mode));
            Vm target = b.createVm(VmConfig.of(8L << 20).withPaging(mode));
            int n = 150; // more than two batches of 64
            long[] gfns = new long[n + 1];
            for (int i = 0; i < n; i++) {
                gfns[i] = 3L * i;
                if (i % 5 != 4) { // every fifth never populated at the source
                    byte[] page = contents(gfns[i]);
                    source.writePhysical(gfns[i] << 12, page, 0, page.length);
                }
                if (i % 7 == 0) {
                    target.writePhysicalLong(gfns[i] << 12, -1); // held already: stored over
                }
            }
            for (int i = 1; i < n; i += 11) {
                if (i % 5 != 4) {
                    assertTrue(source.swapOut(gfns[i]), "page " + i + " to swap");
                }
            }
            gfns[n] = gfns[2]; // a duplicate
            target.dirtyLog().enable(io.vmpage.engine.dirty.DirtyTracking.WRITE_PROTECT);
            target.copyFramesFrom(source, gfns, n + 1);
            io.vmpage.engine.dirty.DirtySnapshot logged = new io.vmpage.engine.dirty.DirtySnapshot(target.physicalMap().frames());
            target.dirtyLog().harvest(logged);
            target.dirtyLog().disable();
            for (int i = 0; i < n; i++) {
                byte[] expected = i % 5 == 4 ? new byte[4096] : contents(gfns[i]);
                assertArrayEquals(expected, read(target, gfns[i]), "page " + i);
                assertTrue(logged.isDirty(gfns[i]), "page " + i + " is logged");
            }
            assertEquals(0, source.swappedFrames(), "the swapped pages were brought in to be read");
            assertThrows(IndexOutOfBoundsException.class, () -> target.copyFramesFrom(source, gfns, n + 2));
        }
    }

    /**
     * The zero scan of a batch ({@link Vm#zeroFrames}) tells every kind of page as {@link Vm#isZeroFrame}
     * does: a page written with data is not zero, one written with zeros, never populated or discarded is,
     * and a page on swap is brought in and scanned (with data or without). Bad batches are clear errors.
     */
    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    void aZeroScanOfABatchTellsEveryKindOfPage(PagingMode mode) throws Exception {
        try (Host a = Host.create(64L << 20)) {
            a.attachSwap(SwapDevice.create(dir.resolve("swap"), 1024));
            Vm vm = a.createVm(VmConfig.of(8L << 20).withPaging(mode));
            long[] gfns = new long[64 + 10];
            long expected = 0;
            for (int i = 0; i < gfns.length; i++) {
                gfns[i] = 2L * i + 1;
                int kind = i % 6;
                if (kind == 0 || kind == 3) { // data; 3: then on swap
                    byte[] page = contents(gfns[i]);
                    page[4095] |= 1; // non-zero even where the rest is
                    java.util.Arrays.fill(page, 0, 4000, (byte) 0); // the first non-zero byte is late in the page
                    vm.writePhysical(gfns[i] << 12, page, 0, page.length);
                } else if (kind == 1 || kind == 4) { // zeros written whole; 4: then on swap
                    vm.writePhysical(gfns[i] << 12, new byte[4096], 0, 4096);
                } else if (kind == 2) { // written, then discarded
                    vm.writePhysicalLong(gfns[i] << 12, 5);
                    assertTrue(vm.discardFrame(gfns[i]));
                } // kind 5: never populated
                if (kind == 3 || kind == 4) {
                    assertTrue(vm.swapOut(gfns[i]), "page " + i + " to swap");
                }
                if (i < 64 && kind != 0 && kind != 3) {
                    expected |= 1L << i;
                }
            }
            assertTrue(vm.swappedFrames() > 0);
            assertEquals(expected, vm.zeroFrames(gfns, 0, 64), "the first 64");
            for (int i = 64; i < gfns.length; i++) {
                long bit = vm.zeroFrames(gfns, i, 1);
                assertEquals(vm.isZeroFrame(gfns[i]) ? 1 : 0, bit, "page " + i);
                assertEquals(i % 6 == 0 || i % 6 == 3 ? 0 : 1, bit, "page " + i);
            }
            assertEquals(0, vm.swappedFrames(), "the pages on swap were brought in to be scanned");
            assertThrows(IllegalArgumentException.class, () -> vm.zeroFrames(gfns, 0, 65));
            assertThrows(IllegalArgumentException.class, () -> vm.zeroFrames(gfns, 0, 0));
            assertThrows(IndexOutOfBoundsException.class, () -> vm.zeroFrames(gfns, gfns.length - 1, 2));
            assertThrows(IllegalArgumentException.class, () -> vm.zeroFrames(new long[] {-1}, 0, 1));
            a.destroyVm(vm);
            assertThrows(IllegalStateException.class, () -> vm.zeroFrames(gfns, 0, 1));
        }
    }

    @Test
    void badCopiesAreClearErrors() {
        try (Host a = Host.create(32L << 20); Host b = Host.create(32L << 20)) {
            Vm small = a.createVm(VmConfig.of(4L << 20));
            Vm large = b.createVm(VmConfig.of(8L << 20));
            assertThrows(IllegalArgumentException.class, () -> large.copyFrameFrom(large, 0));
            long beyondSmall = (4L << 20) >>> 12;
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> large.copyFrameFrom(small, beyondSmall));
            assertTrue(e.getMessage().contains("outside VM"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> large.isZeroFrame(-1));
            small.writePhysicalLong(0, 7);
            a.destroyVm(small);
            IllegalStateException gone = assertThrows(IllegalStateException.class, () -> large.copyFrameFrom(small, 0));
            assertTrue(gone.getMessage().contains("destroyed"), gone.getMessage());
            assertEquals(0, large.populatedFrames(), "a failed copy places nothing");
        }
    }

    /**
     * A whole-page store into a frame never populated takes a frame without zeroing it: the frames a
     * destroyed VM left full of 0x5A are handed out again, and every page the next VM writes whole reads
     * exactly as written, while a page it writes a word of reads zeros around that word.
     */
    @ParameterizedTest
    @EnumSource(PagingMode.class)
    void aWholePageStoreIntoANewFrameIsThatPageAndAPartialOneIsZeroAroundIt(PagingMode mode) {
        try (Host host = Host.create(48L << 20)) {
            Vm first = host.createVm(VmConfig.of(16L << 20).withPaging(mode));
            byte[] dirty = new byte[4096];
            java.util.Arrays.fill(dirty, (byte) 0x5A);
            for (long gfn = 0; gfn < 1024; gfn++) {
                first.writePhysical(gfn << 12, dirty, 0, dirty.length);
            }
            host.destroyVm(first);
            Vm next = host.createVm(VmConfig.of(16L << 20).withPaging(mode));
            java.nio.ByteBuffer direct = java.nio.ByteBuffer.allocateDirect(4096);
            for (long gfn = 0; gfn < 1024; gfn++) {
                byte[] page = contents(gfn);
                if (gfn % 3 == 0) {
                    next.writePhysical(gfn << 12, page, 0, page.length);
                } else if (gfn % 3 == 1) {
                    direct.clear().put(page).flip();
                    next.writePhysical(gfn << 12, direct, 4096);
                    assertFalse(direct.hasRemaining(), "the buffer is consumed");
                    assertArrayEquals(page, read(next, gfn), "page " + gfn);
                } else {
                    next.writePhysicalLong((gfn << 12) + 8, gfn);
                    byte[] seen = read(next, gfn);
                    for (int i = 0; i < seen.length; i++) {
                        if (i < 8 || i >= 16) {
                            assertEquals(0, seen[i], "byte " + i + " of page " + gfn + " holds the last VM's data");
                        }
                    }
                    continue;
                }
                assertArrayEquals(page, read(next, gfn), "page " + gfn);
            }
            assertEquals(1024, next.populatedFrames());
        }
    }

    /**
     * Copies racing the source's swap-outs of the page they copy: each copy is the page, never the zeros of a
     * frame that is only away on swap. A seeded schedule, a time bound.
     */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.CsvSource({"NESTED,false", "SHADOW,false", "NESTED,true", "SHADOW,true"})
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void copiesRacingTheSourcesSwapOutsCopyThePage(PagingMode mode, boolean batched) throws Exception {
        try (Host a = Host.create(64L << 20); Host b = Host.create(64L << 20)) {
            a.attachSwap(SwapDevice.create(dir.resolve("swap"), 1024));
            Vm source = a.createVm(VmConfig.of(8L << 20).withPaging(mode));
            Vm target = b.createVm(VmConfig.of(8L << 20).withPaging(mode));
            int pages = 4;
            for (long gfn = 0; gfn < pages; gfn++) {
                byte[] page = contents(100 + gfn);
                source.writePhysical(gfn << 12, page, 0, page.length);
            }
            java.util.concurrent.atomic.AtomicBoolean stop = new java.util.concurrent.atomic.AtomicBoolean();
            java.util.concurrent.atomic.AtomicLong swaps = new java.util.concurrent.atomic.AtomicLong();
            Thread swapper = new Thread(() -> {
                SplittableRandom random = new SplittableRandom(13);
                while (!stop.get()) {
                    if (source.swapOut(random.nextInt(pages))) {
                        swaps.incrementAndGet();
                    }
                }
            }, "swapper");
            swapper.start();
            long copies = 0;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
            try {
                long[] one = new long[1];
                while ((copies < 20_000 || swaps.get() < 500) && System.nanoTime() < deadline) {
                    long gfn = copies % pages;
                    if (batched) {
                        if (target.physicalMap().machineFrame(gfn) >= 0) {
                            assertTrue(target.discardFrame(gfn)); // so the batch places it afresh
                        }
                        one[0] = gfn;
                        target.copyFramesFrom(source, one, 1);
                    } else {
                        target.copyFrameFrom(source, gfn);
                    }
                    assertFalse(target.isZeroFrame(gfn), "copy " + copies + " of guest frame " + gfn + " read zeros");
                    one[0] = gfn;
                    assertEquals(0, source.zeroFrames(one, 0, 1), "the zero scan of guest frame " + gfn + " read zeros");
                    assertArrayEquals(contents(100 + gfn), read(target, gfn), "copy " + copies + " of guest frame " + gfn);
                    copies++;
                }
            } finally {
                stop.set(true);
                swapper.join();
            }
            assertTrue(swaps.get() >= 100, "the race happened: " + swaps.get() + " swap-outs over " + copies + " copies");
            assertEquals(P2mEntry.PRIVATE, P2mEntry.kind(target.physicalMap().entry(0)));
        }
    }
}
