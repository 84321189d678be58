package io.vmpage.engine.paging.pv;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.ExitReason;
import io.vmpage.engine.GuestFaultException;
import io.vmpage.engine.Host;
import io.vmpage.engine.Hypercalls;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.dirty.DirtySnapshot;
import io.vmpage.engine.dirty.DirtyTracking;
import io.vmpage.engine.memory.FrameDescriptor;
import io.vmpage.engine.memory.FrameTable;
import io.vmpage.mmu.Fault;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Pte;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(value = 60, unit = TimeUnit.SECONDS)
class ParavirtualPagingTest {
    static final long MIB = 1L << 20;
    static final long VA = 0x0000_7F00_0012_3000L;
    static final long KERNEL = Pte.P | Pte.RW;

    final Host host = Host.create(64 * MIB);

    @AfterEach
    void close() {
        host.close();
    }

    Vm pvVm() {
        return host.createVm(VmConfig.of(16 * MIB).withPaging(PagingMode.PARAVIRTUAL));
    }

    static long entryPtr(long tableMfn, long va, int level) {
        return (tableMfn << MachineMemory.FRAME_SHIFT) + ((long) Pte.index(va, level) << 3);
    }

    static long entry(long mfn, long flags) {
        return (mfn << MachineMemory.FRAME_SHIFT) | flags;
    }

    /** An address space built only through hypercalls: L4 pinned first, then one mmu_update per level. */
    static final class Space {
        final Vm vm;
        final Vcpu cpu;
        final Hypercalls hc;
        final long l4;
        final long l3;
        final long l2;
        final long l1;
        final long dataGfn = 0x200;
        final long data;

        Space(Vm vm) {
            this.vm = vm;
            this.cpu = vm.vcpu(0);
            this.hc = cpu.hypercalls();
            l4 = hc.populatePhysmap(0x100);
            l3 = hc.populatePhysmap(0x101);
            l2 = hc.populatePhysmap(0x102);
            l1 = hc.populatePhysmap(0x103);
            data = hc.populatePhysmap(dataGfn);
            assertTrue(hc.pinTable(4, l4), hc.lastError());
            assertTrue(hc.mmuUpdate(entryPtr(l4, VA, 4), entry(l3, KERNEL)), hc.lastError());
            assertTrue(hc.mmuUpdate(entryPtr(l3, VA, 3), entry(l2, KERNEL)), hc.lastError());
            assertTrue(hc.mmuUpdate(entryPtr(l2, VA, 2), entry(l1, KERNEL)), hc.lastError());
            assertTrue(hc.mmuUpdate(entryPtr(l1, VA, 1), entry(data, KERNEL)), hc.lastError());
            assertTrue(hc.newBasePtr(l4 << MachineMemory.FRAME_SHIFT), hc.lastError());
        }

        /** Maps guest frame {@code gfn} at {@code va} (same L1 as VA). */
        boolean map(long va, long mfn, long flags) {
            return hc.mmuUpdate(entryPtr(l1, va, 1), entry(mfn, flags));
        }
    }

    static int type(Host host, long mfn) {
        return FrameDescriptor.type(host.frames().descriptor(mfn));
    }

    static int typeCount(Host host, long mfn) {
        return FrameDescriptor.refs(host.frames().descriptor(mfn)) - 1;
    }

    @Test
    void tablesBuiltThroughHypercallsTranslateGuestAccessesToMachineFrames() {
        Vm vm = pvVm();
        Space s = new Space(vm);
        assertEquals(11, vm.exits().get(ExitReason.HYPERCALL), "five populate_physmap, pin, four mmu_updates, new_baseptr");
        s.cpu.writeLong(VA + 8, 0x1122_3344_5566_7788L);
        assertEquals(0x1122_3344_5566_7788L, s.cpu.readLong(VA + 8));
        assertEquals(0x1122_3344_5566_7788L, vm.readPhysicalLong((s.dataGfn << 12) + 8), "the guest-physical view agrees");
        assertEquals(11, vm.exits().get(ExitReason.HYPERCALL), "accesses do not exit");
        assertEquals(0, vm.exits().get(ExitReason.PAGE_FAULT_INJECTED));
        assertEquals(FrameDescriptor.TYPE_L4, type(host, s.l4));
        assertEquals(2, typeCount(host, s.l4), "pinned and loaded");
        assertEquals(FrameDescriptor.TYPE_L3, type(host, s.l3));
        assertEquals(FrameDescriptor.TYPE_L2, type(host, s.l2));
        assertEquals(FrameDescriptor.TYPE_L1, type(host, s.l1));
        assertEquals(FrameDescriptor.TYPE_WRITABLE, type(host, s.data));
        assertEquals(s.data, s.hc.machineFrame(s.dataGfn), "the guest's P2M view");
        assertEquals(-1, s.hc.machineFrame(0x300), "not populated");
    }

    @Test
    void aBatchIsOneHypercallAndNativeCr3LoadAndInvlpgAreHypercallsToo() {
        Vm vm = pvVm();
        Vcpu cpu = vm.vcpu(0);
        Hypercalls hc = cpu.hypercalls();
        long l4 = hc.populatePhysmap(1);
        long l3 = hc.populatePhysmap(2);
        long l2 = hc.populatePhysmap(3);
        long l1 = hc.populatePhysmap(4);
        long data = hc.populatePhysmap(5);
        assertTrue(hc.pinTable(4, l4));
        long before = cpu.exitCount(ExitReason.HYPERCALL);
        long[] ptrs = {entryPtr(l4, VA, 4), entryPtr(l3, VA, 3), entryPtr(l2, VA, 2), entryPtr(l1, VA, 1)};
        long[] vals = {entry(l3, KERNEL), entry(l2, KERNEL), entry(l1, KERNEL), entry(data, KERNEL)};
        assertEquals(4, hc.mmuUpdate(ptrs, vals, 4), hc.lastError());
        assertEquals(before + 1, cpu.exitCount(ExitReason.HYPERCALL), "one exit for the batch");
        cpu.loadCr3(l4 << 12);
        cpu.invlpg(VA);
        assertEquals(before + 3, cpu.exitCount(ExitReason.HYPERCALL), "MOV CR3 and INVLPG trap");
        cpu.writeLong(VA, 42);
        assertEquals(42, vm.readPhysicalLong(5 << 12));
        GuestFaultException gp = assertThrows(GuestFaultException.class, () -> cpu.loadCr3(l3 << 12));
        assertEquals(Fault.GENERAL_PROTECTION, gp.fault());
        assertEquals(42, cpu.readLong(VA), "the refused CR3 load left CR3 alone");
    }

    @Test
    void aGuestPageFaultIsBouncedToTheGuestHandler() {
        Vm vm = pvVm();
        Space s = new Space(vm);
        long missing = VA + 0x5000;
        long frame = s.hc.populatePhysmap(0x201);
        s.cpu.setPageFaultHandler((cpu, cr2, errorCode) -> {
            assertEquals(missing + 16, cr2);
            assertEquals(Fault.PF_W, errorCode & (Fault.PF_P | Fault.PF_W));
            return cpu.hypercalls().mmuUpdate(entryPtr(s.l1, cr2, 1), entry(frame, KERNEL));
        });
        s.cpu.writeLong(missing + 16, 99);
        assertEquals(99, vm.readPhysicalLong((0x201 << 12) + 16));
        assertEquals(1, s.cpu.exitCount(ExitReason.PAGE_FAULT_INJECTED));
        assertEquals(1, s.cpu.guestPageFaults());
    }

    @Test
    void entriesPointingAtAnotherVmsFramesAndPtrsInsideThemAreRefused() {
        Vm vm = pvVm();
        Space s = new Space(vm);
        Vm other = pvVm();
        Space victim = new Space(other);
        victim.cpu.writeLong(VA, 0x5EC12E7L);
        assertFalse(s.map(VA + 0x1000, victim.data, Pte.P), "read-only mapping of a foreign frame");
        assertTrue(s.hc.lastError().contains("not owned"), s.hc.lastError());
        assertFalse(s.map(VA + 0x1000, victim.data, KERNEL));
        assertFalse(s.hc.mmuUpdate(entryPtr(s.l2, VA + (1L << 21), 2), entry(victim.l1, KERNEL)), "a foreign table");
        assertFalse(s.hc.mmuUpdate(entryPtr(victim.l1, VA, 1), entry(s.data, KERNEL)), "ptr in a foreign table");
        assertTrue(s.hc.lastError().contains("does not own"), s.hc.lastError());
        assertFalse(s.hc.pinTable(1, victim.l1));
        assertFalse(s.hc.newBasePtr(victim.l4 << 12));
        assertEquals(0x5EC12E7L, victim.cpu.readLong(VA), "the victim still maps its own frame");
        assertEquals(entry(victim.data, KERNEL), host.memory().getLong(entryPtr(victim.l1, VA, 1)) & ~(Pte.A | Pte.D));
    }

    @Test
    void pageTablePagesMapReadOnlyButNeverWritable() {
        Vm vm = pvVm();
        Space s = new Space(vm);
        long tableVa = VA + 0x1000;
        assertFalse(s.map(tableVa, s.l1, KERNEL), "writable mapping of an L1");
        assertTrue(s.hc.lastError().contains("writable"), s.hc.lastError());
        assertFalse(s.map(tableVa, s.l4, KERNEL), "writable mapping of the L4");
        assertTrue(s.map(tableVa, s.l1, Pte.P), s.hc.lastError());
        long own = s.cpu.readLong(tableVa + ((long) Pte.index(VA, 1) << 3));
        assertEquals(entry(s.data, KERNEL), own & ~(Pte.A | Pte.D), "the guest reads its own L1");
        GuestFaultException pf = assertThrows(GuestFaultException.class, () -> s.cpu.writeLong(tableVa, 0));
        assertEquals(Fault.PAGE_FAULT, pf.fault());
        assertEquals(1, s.cpu.exitCount(ExitReason.PAGE_FAULT_INJECTED));
    }

    @Test
    void aFrameMappedWritableCannotBecomeATableUntilTheMappingGoes() {
        Vm vm = pvVm();
        Space s = new Space(vm);
        long frame = s.hc.populatePhysmap(0x300);
        long va = VA + 0x2000;
        assertTrue(s.map(va, frame, KERNEL));
        assertFalse(s.hc.pinTable(1, frame), "typed writable");
        assertFalse(s.hc.mmuUpdate(entryPtr(s.l2, VA + (1L << 21), 2), entry(frame, KERNEL)));
        assertTrue(s.map(va, 0, 0), s.hc.lastError());
        assertEquals(FrameDescriptor.TYPE_DATA, type(host, frame));
        assertTrue(s.hc.mmuUpdate(entryPtr(s.l2, VA + (1L << 21), 2), entry(frame, KERNEL)), s.hc.lastError());
        assertEquals(FrameDescriptor.TYPE_L1, type(host, frame));
        assertFalse(s.map(va, frame, KERNEL), "now a table");
    }

    /**
     * Xen's decrease_reservation: a frame leaves a PV guest (a discard, its balloon) only once nothing of
     * the guest's refers to it: not mapped writable, not mapped read-only, not a table. Once the guest
     * unmapped it, it goes, and no vCPU reaches it any more.
     */
    @Test
    void aFrameLeavesThePvGuestOnlyOnceItsTablesNoLongerMapIt() {
        Vm vm = pvVm();
        Space s = new Space(vm);
        long gfn = 0x300;
        long frame = s.hc.populatePhysmap(gfn);
        long va = VA + 0x2000;
        assertTrue(s.map(va, frame, KERNEL));
        s.cpu.writeLong(va, 7);
        assertFalse(vm.discardFrame(gfn), "mapped writable");
        assertTrue(s.map(va, frame, Pte.P), s.hc.lastError());
        assertTrue(s.map(va + 0x1000, frame, Pte.P), s.hc.lastError());
        assertFalse(vm.discardFrame(gfn), "mapped read-only, twice");
        assertTrue(s.map(va, 0, 0), s.hc.lastError());
        assertFalse(vm.discardFrame(gfn), "still mapped read-only once");
        assertEquals(7, s.cpu.readLong(va + 0x1000));
        assertFalse(vm.discardFrame(0x103), "the L1 table");
        long free = host.frames().freeFrames();
        assertTrue(s.map(va + 0x1000, 0, 0), s.hc.lastError());
        assertTrue(vm.discardFrame(gfn), "unmapped everywhere: it goes");
        assertEquals(free + 1, host.frames().freeFrames());
        assertEquals(-1, s.hc.machineFrame(gfn));
        assertFalse(s.map(va, frame, Pte.P), "the old machine frame is not the guest's any more");
        assertThrows(GuestFaultException.class, () -> s.cpu.readLong(va + 0x1000), "no translation outlived the unmap");
        long again = s.hc.populatePhysmap(gfn);
        assertTrue(s.map(va, again, KERNEL), s.hc.lastError());
        assertEquals(0, s.cpu.readLong(va), "populated afresh: zeros");
    }

    @Test
    void aStaleWritableTranslationNeverOutlivesTheUnmapEvenWithoutInvlpg() {
        Vm vm = host.createVm(VmConfig.of(16 * MIB).withPaging(PagingMode.PARAVIRTUAL).withVcpus(2));
        Space s = new Space(vm);
        Vcpu other = vm.vcpu(1);
        assertTrue(other.hypercalls().newBasePtr(s.l4 << 12), other.hypercalls().lastError());
        long frame = s.hc.populatePhysmap(0x300);
        long va = VA + 0x2000;
        assertTrue(s.map(va, frame, KERNEL));
        s.cpu.writeLong(va, 2); // both vCPUs cache a writable translation (non-present-looking data)
        other.writeLong(va + 8, 4);
        assertTrue(s.map(va, 0, 0), "unmapped, and the guest 'forgets' INVLPG");
        assertTrue(s.hc.mmuUpdate(entryPtr(s.l2, VA + (1L << 21), 2), entry(frame, KERNEL)), s.hc.lastError());
        assertEquals(FrameDescriptor.TYPE_L1, type(host, frame), "now an L1 table");
        for (Vcpu cpu : vm.vcpus()) {
            GuestFaultException pf = assertThrows(GuestFaultException.class, () -> cpu.writeLong(va + 16, entry(s.l1, KERNEL)),
                cpu + " wrote into a page table through a stale translation");
            assertEquals(Fault.PAGE_FAULT, pf.fault());
        }
        assertEquals(0, vm.readPhysicalLong((0x300L << 12) + 16));
    }

    @Test
    @Timeout(value = 30, unit = TimeUnit.SECONDS)
    void twoVcpusRemappingConcurrentlyNeitherDeadlockNorSeeTheOthersStaleFrames() throws Exception {
        Vm vm = host.createVm(VmConfig.of(16 * MIB).withPaging(PagingMode.PARAVIRTUAL).withVcpus(2));
        Space s = new Space(vm);
        assertTrue(vm.vcpu(1).hypercalls().newBasePtr(s.l4 << 12));
        java.util.concurrent.atomic.AtomicReference<Throwable> failure = new java.util.concurrent.atomic.AtomicReference<>();
        Thread[] threads = new Thread[2];
        for (int t = 0; t < 2; t++) {
            Vcpu cpu = vm.vcpu(t);
            int id = t;
            threads[t] = new Thread(() -> {
                try {
                    cpu.run(() -> {
                        Hypercalls hc = cpu.hypercalls();
                        long[] frames = {hc.populatePhysmap(0x400 + 2 * id), hc.populatePhysmap(0x401 + 2 * id)};
                        long va = VA + ((8L + id) << 12);
                        for (int i = 0; i < 400; i++) {
                            long frame = frames[i & 1];
                            if (!hc.mmuUpdate(entryPtr(s.l1, va, 1), entry(frame, KERNEL))) {
                                throw new AssertionError(hc.lastError());
                            }
                            cpu.writeLong(va, (long) id << 32 | i);
                            if (vm.readPhysicalLong(((0x400L + 2 * id + (i & 1)) << 12)) != ((long) id << 32 | i)) {
                                throw new AssertionError("vCPU " + id + " wrote through a stale translation at " + i);
                            }
                        }
                    });
                } catch (Throwable e) {
                    failure.compareAndSet(null, e);
                }
            });
            threads[t].start();
        }
        for (Thread t : threads) {
            t.join();
        }
        if (failure.get() != null) {
            throw new AssertionError(failure.get());
        }
        assertEquals(FrameDescriptor.TYPE_WRITABLE, type(host, vm.physicalMap().machineFrame(0x401)));
        assertEquals(FrameDescriptor.TYPE_DATA, type(host, vm.physicalMap().machineFrame(0x400)), "remapped away");
    }

    @Test
    void ptrsOutsideValidatedTablesAreRefused() {
        Vm vm = pvVm();
        Space s = new Space(vm);
        long untyped = s.hc.populatePhysmap(0x300);
        assertFalse(s.hc.mmuUpdate(entryPtr(s.data, VA, 1), entry(untyped, KERNEL)), "ptr in a data frame");
        assertTrue(s.hc.lastError().contains("not a validated page table"), s.hc.lastError());
        assertFalse(s.hc.mmuUpdate(entryPtr(untyped, VA, 1), entry(untyped, Pte.P)), "ptr in an untyped frame");
        assertFalse(s.hc.mmuUpdate(entryPtr(s.l1, VA, 1) + 1, 0), "misaligned ptr");
        assertFalse(s.hc.mmuUpdate(64 * MIB, 0), "beyond machine memory");
        assertFalse(s.hc.mmuUpdate(0, 0), "the host's frame 0");
    }

    @Test
    void onlyAPinnedL4OfThisVmCanBecomeCr3() {
        Vm vm = pvVm();
        Space s = new Space(vm);
        long unpinned = s.hc.populatePhysmap(0x300);
        assertFalse(s.hc.newBasePtr(unpinned << 12));
        assertTrue(s.hc.lastError().contains("not a validated"), s.hc.lastError());
        assertFalse(s.hc.newBasePtr(s.l3 << 12), "an L3");
        assertFalse(s.hc.newBasePtr(s.data << 12), "a data frame");
        assertFalse(s.hc.newBasePtr((s.l4 << 12) | (1L << 50)), "bits above MAXPHYADDR");
        assertTrue(s.hc.newBasePtr((s.l4 << 12) | 5 | (1L << 63)), "PCID bits and the no-flush bit are masked off");
        assertEquals(2, typeCount(host, s.l4), "reloading the same base pointer keeps one reference");
        assertTrue(s.hc.pinTable(4, unpinned));
        assertTrue(s.hc.newBasePtr(unpinned << 12));
        assertEquals(1, typeCount(host, s.l4), "only the pin is left");
        assertTrue(s.hc.unpinTable(unpinned));
        assertEquals(FrameDescriptor.TYPE_L4, type(host, unpinned), "still loaded in CR3");
        assertFalse(s.hc.unpinTable(unpinned), "not pinned any more");
        assertThrows(GuestFaultException.class, () -> s.cpu.readLong(VA), "the new L4 is empty");
    }

    @Test
    void reservedBitsAndSuperpagesAreRefused() {
        Vm vm = pvVm();
        Space s = new Space(vm);
        long frame = s.hc.populatePhysmap(0x300);
        assertFalse(s.map(VA + 0x1000, frame, KERNEL | (1L << 51)), "address bit 51 above MAXPHYADDR 46");
        assertTrue(s.hc.lastError().contains("reserved"), s.hc.lastError());
        assertFalse(s.hc.mmuUpdate(entryPtr(s.l4, 0, 4), entry(s.l3, KERNEL | Pte.PS)), "PS in an L4 entry");
        assertFalse(s.hc.mmuUpdate(entryPtr(s.l2, VA + (1L << 21), 2), entry(frame, KERNEL | Pte.PS)), "2 MiB superpage");
        assertFalse(s.hc.mmuUpdate(entryPtr(s.l3, VA + (1L << 30), 3), entry(frame, KERNEL | Pte.PS)), "1 GiB superpage");
        assertTrue(s.map(VA + 0x1000, frame, KERNEL | Pte.NX | (0x7FFL << 52) | (7L << 9)), "NX and software bits are fine");
        assertTrue(s.hc.mmuUpdate(entryPtr(s.l1, VA + 0x3000, 1), 0xFFFF_FFFF_FFFF_FFFEL), "non-present: ignored bits");
    }

    @Test
    void aBatchStopsAtTheFirstRefusedUpdateAndReportsTheSuccessCount() {
        Vm vm = pvVm();
        Space s = new Space(vm);
        long a = s.hc.populatePhysmap(0x300);
        long b = s.hc.populatePhysmap(0x301);
        long[] ptrs = {entryPtr(s.l1, VA + 0x1000, 1), entryPtr(s.l1, VA + 0x2000, 1), entryPtr(s.l1, VA + 0x3000, 1),
            entryPtr(s.l1, VA + 0x4000, 1)};
        long[] vals = {entry(a, KERNEL), entry(b, KERNEL), entry(s.l2, KERNEL), entry(a, Pte.P)};
        long exits = s.cpu.exitCount(ExitReason.HYPERCALL);
        assertEquals(2, s.hc.mmuUpdate(ptrs, vals, 4));
        assertEquals(exits + 1, s.cpu.exitCount(ExitReason.HYPERCALL));
        assertTrue(s.hc.lastError().startsWith("mmu_update request 2"), s.hc.lastError());
        assertEquals(entry(a, KERNEL), host.memory().getLong(ptrs[0]));
        assertEquals(entry(b, KERNEL), host.memory().getLong(ptrs[1]));
        assertEquals(0, host.memory().getLong(ptrs[2]), "the refused entry is unchanged");
        assertEquals(0, host.memory().getLong(ptrs[3]), "nothing after it ran");
        assertEquals(FrameDescriptor.TYPE_L2, type(host, s.l2));
    }

    @Test
    void unmappingThenInvlpgMakesTheOldMappingUnreachable() {
        Vm vm = pvVm();
        Space s = new Space(vm);
        s.cpu.writeLong(VA, 7);
        assertEquals(7, s.cpu.readLong(VA)); // cached in the TLB now
        assertTrue(s.hc.mmuUpdate(entryPtr(s.l1, VA, 1), 0));
        s.hc.invlpgLocal(VA);
        GuestFaultException pf = assertThrows(GuestFaultException.class, () -> s.cpu.readLong(VA));
        assertEquals(Fault.PAGE_FAULT, pf.fault());
        assertEquals(0, pf.errorCode() & Fault.PF_P, "not present");
        assertEquals(FrameDescriptor.TYPE_DATA, type(host, s.data), "the writable reference went with the entry");
        assertEquals(7, vm.readPhysicalLong(s.dataGfn << 12), "the data stays in guest memory");
        // Replacing an intermediate entry drops the subtree's types.
        assertTrue(s.hc.mmuUpdate(entryPtr(s.l3, VA, 3), 0));
        assertEquals(FrameDescriptor.TYPE_DATA, type(host, s.l2));
        assertEquals(FrameDescriptor.TYPE_DATA, type(host, s.l1));
        assertFalse(s.map(VA, s.data, KERNEL), "the old L1 is no longer a table: its entries are not writable by hypercall");
    }

    @Test
    void theDomainBuilderFillsUntypedFramesAndPinningValidatesThemRecursively() {
        Vm vm = pvVm();
        Vcpu cpu = vm.vcpu(0);
        Hypercalls hc = cpu.hypercalls();
        long[] mfn = new long[5];
        for (int i = 0; i < 5; i++) {
            mfn[i] = hc.populatePhysmap(0x10 + i);
        }
        for (int level = 4; level >= 1; level--) {
            long gpa = ((0x10 + 4 - level) << 12) + ((long) Pte.index(VA, level) << 3);
            vm.writePhysicalLong(gpa, entry(mfn[5 - level], KERNEL));
        }
        Vm other = pvVm();
        long foreign = other.vcpu(0).hypercalls().populatePhysmap(0);
        long badGpa = (0x13L << 12) + 8 * 511;
        vm.writePhysicalLong(badGpa, entry(foreign, Pte.P));
        assertFalse(hc.pinTable(4, mfn[0]), "an L1 entry deep down names a foreign frame");
        assertTrue(hc.lastError().contains("not owned"), hc.lastError());
        for (long f : mfn) {
            assertEquals(FrameDescriptor.TYPE_DATA, type(host, f), "a refused pin leaves no types behind");
            assertEquals(0, typeCount(host, f));
        }
        vm.writePhysicalLong(badGpa, 0);
        assertTrue(hc.pinTable(4, mfn[0]), hc.lastError());
        assertTrue(hc.newBasePtr(mfn[0] << 12));
        cpu.writeLong(VA, 5);
        assertEquals(5, vm.readPhysicalLong(0x14L << 12));
        assertFalse(hc.pinTable(4, mfn[0]), "already pinned");
        assertFalse(hc.pinTable(1, mfn[1]), "typed L3, not L1");
    }

    @Test
    void hypercallsNeedParavirtualMode() {
        Vm nested = host.createVm(VmConfig.of(16 * MIB));
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> nested.vcpu(0).hypercalls());
        assertTrue(e.getMessage().contains("NESTED"), e.getMessage());
        assertThrows(IllegalArgumentException.class,
            () -> host.createVm(VmConfig.of(16 * MIB).withPaging(PagingMode.PARAVIRTUAL).withLevels(5)));
    }

    @Test
    void destroyingTheVmClearsTypes() {
        Vm vm = pvVm();
        Space s = new Space(vm);
        host.destroyVm(vm);
        assertTrue(FrameDescriptor.isFree(host.frames().descriptor(s.l4)));
        Vm next = pvVm();
        new Space(next).cpu.writeLong(VA, 1); // reused frames validate afresh
    }

    /**
     * L1 entries that are already present when their table is validated while the dirty log is on (a
     * domain builder's stores before the pin, or a guest that fills a page before linking it, as Linux PV
     * does) must get the log-dirty write protection too, or writes through them are never reported.
     * Both validation paths: pinning the L4 (recursive validation) and an mmu_update that links the L1.
     */
    @org.junit.jupiter.params.ParameterizedTest
    @org.junit.jupiter.params.provider.ValueSource(booleans = {true, false})
    void l1EntriesPresentBeforeValidationAreWriteProtectedForTheDirtyLog(boolean validatedByPin) {
        Vm vm = pvVm();
        Vcpu cpu = vm.vcpu(0);
        Hypercalls hc = cpu.hypercalls();
        long[] gfns = {0x100, 0x101, 0x102, 0x103};
        long l4 = hc.populatePhysmap(gfns[0]);
        long l3 = hc.populatePhysmap(gfns[1]);
        long l2 = hc.populatePhysmap(gfns[2]);
        long l1 = hc.populatePhysmap(gfns[3]);
        long dataGfn = 0x200;
        long data = hc.populatePhysmap(dataGfn);
        DirtyLog log = vm.dirtyLog();
        log.enable(DirtyTracking.WRITE_PROTECT);
        // The builder's plain stores (guest-physical addresses of the table frames; entries hold MFNs).
        vm.writePhysicalLong((gfns[0] << 12) + ((long) Pte.index(VA, 4) << 3), entry(l3, KERNEL));
        vm.writePhysicalLong((gfns[1] << 12) + ((long) Pte.index(VA, 3) << 3), entry(l2, KERNEL));
        vm.writePhysicalLong((gfns[3] << 12) + ((long) Pte.index(VA, 1) << 3), entry(data, KERNEL));
        if (validatedByPin) {
            vm.writePhysicalLong((gfns[2] << 12) + ((long) Pte.index(VA, 2) << 3), entry(l1, KERNEL));
            assertTrue(hc.pinTable(4, l4), hc.lastError());
        } else {
            assertTrue(hc.pinTable(4, l4), hc.lastError());
            assertTrue(hc.mmuUpdate(entryPtr(l2, VA, 2), entry(l1, KERNEL)), hc.lastError()); // validates the filled L1 now
        }
        assertTrue(hc.newBasePtr(l4 << MachineMemory.FRAME_SHIFT), hc.lastError());
        DirtySnapshot snapshot = new DirtySnapshot(vm.physicalMap().frames());
        log.harvest(snapshot);
        cpu.writeLong(VA + 8, 42);
        assertEquals(42, vm.readPhysicalLong((dataGfn << 12) + 8));
        log.harvest(snapshot);
        assertTrue(snapshot.isDirty(dataGfn), "the write through an L1 entry present before validation is reported");
        assertEquals(1, cpu.exitCount(ExitReason.DIRTY_LOG), "the first write exits once to restore write access");
    }
}
