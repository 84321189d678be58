package io.vmpage.bench.jmh;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.ExitReason;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.dirty.DirtySnapshot;
import io.vmpage.engine.dirty.DirtyTracking;
import io.vmpage.engine.guest.GuestKernel;
import io.vmpage.mmu.Access;
import io.vmpage.mmu.MachineMemory;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Each DirtyLogBench operation does what its name says (run outside JMH, with the benchmark's own setup). */
class DirtyLogBenchTest {
    private final DirtyLogBench bench = new DirtyLogBench();

    private static long exits(Vm vm) {
        return vm.exits().values().stream().mapToLong(Long::longValue).sum();
    }

    /** The guest frame a guest-virtual address of {@code cpu}'s current address space maps to. */
    private static long gfnOf(Vcpu cpu, long gva) {
        long hpa = cpu.translate(gva, Access.READ);
        return cpu.vm().host().frames().guestFrame(hpa >>> MachineMemory.FRAME_SHIFT);
    }

    @ParameterizedTest
    @ValueSource(strings = {"NESTED/WRITE_PROTECT", "NESTED/DIRTY_BITS", "NESTED/DIRTY_RING", "SHADOW/WRITE_PROTECT",
        "PARAVIRTUAL/WRITE_PROTECT"})
    void trackedWriteIsLoggedWithoutExitingAndUntrackedWriteIsNot(String config) {
        DirtyLogBench.Tracked tracked = new DirtyLogBench.Tracked();
        tracked.config = config;
        tracked.setUp();
        try {
            DirtyTracking method = DirtyTracking.valueOf(config.split("/")[1]);
            assertEquals(method, tracked.vm.dirtyLog().method());
            long before = exits(tracked.vm);
            for (int i = 0; i < 10_000; i++) {
                bench.trackedWrite(tracked);
            }
            assertEquals(before, exits(tracked.vm), "steady-state tracked writes must not exit: " + tracked.vm.exits());
            Map<Long, Long> last = new HashMap<>(); // every store landed, in guest memory
            for (int i = 0; i < 10_000; i++) {
                last.put(DirtyLogBench.HEAP + tracked.offsets[i], (long) i);
            }
            last.forEach((gva, value) -> assertEquals(value, tracked.cpu.readLong(gva)));
            DirtySnapshot snapshot = new DirtySnapshot(tracked.vm.physicalMap().frames());
            long reported = tracked.vm.dirtyLog().harvest(snapshot);
            for (int p = 0; p < DirtyLogBench.HOT_PAGES; p++) {
                long gfn = gfnOf(tracked.cpu, DirtyLogBench.HEAP + p * 4096L);
                assertTrue(snapshot.isDirty(gfn), "hot page " + p + " (gfn 0x" + Long.toHexString(gfn) + ") not reported");
            }
            // Over-reporting allowed: guest page-table frames the log also saw written (a nested walk under EPT
            // A/D counts as a write; paravirtual write protection edits the guest's L1 tables).
            assertTrue(reported <= DirtyLogBench.HOT_PAGES + 32,
                "reported " + reported + " frames for " + DirtyLogBench.HOT_PAGES + " hot pages");
        } finally {
            tracked.tearDown();
        }

        DirtyLogBench.Untracked untracked = new DirtyLogBench.Untracked();
        untracked.config = config;
        untracked.setUp();
        try {
            assertNull(untracked.vm.dirtyLog().method());
            long before = exits(untracked.vm);
            for (int i = 0; i < 10_000; i++) {
                bench.untrackedWrite(untracked);
            }
            assertEquals(before, exits(untracked.vm), "warm untracked writes must not exit");
            assertEquals(0, untracked.vm.dirtyLog().pending());
        } finally {
            untracked.tearDown();
        }
    }

    @Test
    void enableWriteProtectRevokesWriteAccessToEveryFrame() {
        DirtyLogBench.WholeGuest s = new DirtyLogBench.WholeGuest();
        s.setUp();
        try {
            for (int round = 0; round < 2; round++) { // the second round checks the restore of writability
                s.makeAllWritable();
                assertNull(s.vm.dirtyLog().method());
                long frames = s.frames;
                assertEquals(frames, s.vm.populatedFrames(), "every frame populated");
                long before = s.vm.exits().get(ExitReason.DIRTY_LOG) + s.vm.exits().get(ExitReason.EPT_VIOLATION);
                long probe = GuestKernel.DIRECT_MAP + (100L << MachineMemory.FRAME_SHIFT);
                s.cpu.writeLong(probe, s.cpu.readLong(probe));
                assertEquals(before, s.vm.exits().get(ExitReason.DIRTY_LOG) + s.vm.exits().get(ExitReason.EPT_VIOLATION),
                    "a write before enabling must not exit");

                bench.enableWriteProtect(s);
                assertEquals(DirtyTracking.WRITE_PROTECT, s.vm.dirtyLog().method());
                long logExits = s.vm.exits().get(ExitReason.DIRTY_LOG);
                int sampled = 0;
                for (long gfn = 1; gfn < frames; gfn += 4099) { // every frame lost W: each first write exits
                    long va = GuestKernel.DIRECT_MAP + (gfn << MachineMemory.FRAME_SHIFT);
                    s.cpu.writeLong(va, s.cpu.readLong(va));
                    sampled++;
                }
                // Each sample lies under its own direct-map page table, itself write-protected now: the walk to
                // it (a write under EPT A/D) exits once too, as do the PD, PDPT and PML4 walks.
                long tables = sampled + 3;
                long logged = s.vm.exits().get(ExitReason.DIRTY_LOG) - logExits;
                assertTrue(logged >= sampled && logged <= sampled + tables, logged + " write-protect exits for "
                    + sampled + " sampled frames");
                DirtySnapshot snapshot = new DirtySnapshot(frames);
                assertEquals(logged, s.vm.dirtyLog().harvest(snapshot), "each exit logged one frame");
                for (long gfn = 1; gfn < frames; gfn += 4099) {
                    assertTrue(snapshot.isDirty(gfn));
                }
            }
        } finally {
            s.tearDown();
        }
    }

    @Test
    void readLeafWordsReadsOneWordPerFrame() {
        DirtyLogBench.LeafWords s = new DirtyLogBench.LeafWords();
        s.setUp();
        try {
            long n = s.words;
            assertEquals(DirtyLogBench.ENABLE_GUEST_BYTES >>> 12, n);
            assertEquals((n * (n - 1) / 2 << 12) + n * 0x37, bench.readLeafWords(s));
        } finally {
            s.tearDown();
        }
    }

    @Test
    void harvestBitmapTakesTheOnePercentAndScanCountsTheSame() {
        DirtyLogBench.DirtyFrames s = new DirtyLogBench.DirtyFrames();
        s.setUp();
        int[] dirty = DirtyLogBench.dirtyFrames();
        assertEquals(DirtyLogBench.HARVEST_FRAMES / 100, dirty.length);
        for (int round = 0; round < 2; round++) {
            s.mark();
            assertEquals(dirty.length, s.bitmap.count());
            assertEquals(dirty.length, bench.harvestBitmap(s));
            assertEquals(0, s.bitmap.count(), "the harvest leaves the bitmap clean");
            assertEquals(dirty.length, s.snapshot.count());
            for (int gfn : dirty) {
                assertTrue(s.snapshot.isDirty(gfn));
            }
        }
        DirtyLogBench.BitmapWords raw = new DirtyLogBench.BitmapWords();
        raw.setUp();
        try {
            assertEquals(dirty.length, bench.scanBitmapWords(raw));
            assertEquals(s.bitmap.words(), raw.words);
        } finally {
            raw.tearDown();
        }
    }

    @Test
    void firstWriteFaultExitsOncePerPageAndWriteWritableNever() {
        DirtyLogBench.Faulting f = new DirtyLogBench.Faulting();
        f.setUp();
        try {
            for (int round = 0; round < 3; round++) {
                f.harvest();
                // the 4096 pages, and the 8 page tables mapping them plus PD, PDPT, PML4 (under EPT A/D a walk
                // writes the guest's tables, so the walks after the harvest log them again)
                long reported = f.snapshot.count();
                assertTrue(reported >= DirtyLogBench.FAULT_PAGES && reported <= DirtyLogBench.FAULT_PAGES + 11,
                    "the harvest reports the pages written, reported " + reported);
                long logExits = f.vm.exits().get(ExitReason.DIRTY_LOG);
                long all = exits(f.vm);
                bench.firstWriteFault(f);
                long logged = f.vm.exits().get(ExitReason.DIRTY_LOG) - logExits;
                assertEquals(reported, logged, "one write-protect exit per re-protected frame");
                assertEquals(all + logged, exits(f.vm), "no other exit: " + f.vm.exits());
                for (int p = 0; p < DirtyLogBench.FAULT_PAGES; p++) { // after: these walks would unprotect the tables
                    assertTrue(f.snapshot.isDirty(gfnOf(f.cpu, DirtyLogBench.HEAP + p * 4096L)), "page " + p);
                }
                for (int p = 0; p < DirtyLogBench.FAULT_PAGES; p += 97) {
                    assertEquals(f.round, f.cpu.readLong(DirtyLogBench.HEAP + p * 4096L));
                }
            }
        } finally {
            f.tearDown();
        }

        DirtyLogBench.Writable w = new DirtyLogBench.Writable();
        w.setUp();
        try {
            w.flush();
            long all = exits(w.vm);
            bench.writeWritable(w);
            assertEquals(all, exits(w.vm), "writable pages must not exit");
            assertFalse(w.vm.dirtyLog().enabled());
            assertEquals(w.round, w.cpu.readLong(DirtyLogBench.HEAP));
        } finally {
            w.tearDown();
        }
    }
}
