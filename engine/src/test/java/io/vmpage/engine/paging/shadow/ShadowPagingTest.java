package io.vmpage.engine.paging.shadow;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.ExitReason;
import io.vmpage.engine.GuestFaultException;
import io.vmpage.engine.GuestTables;
import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.mmu.ControlRegisters;
import io.vmpage.mmu.Fault;
import io.vmpage.mmu.PageTables;
import io.vmpage.mmu.Pte;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

class ShadowPagingTest {
    private static final long MIB = 1L << 20;
    private static final long VA = 0x0000_7F00_0000_0000L;
    /** Where the tests map the guest's own page-table page (a kernel editing its tables through a mapping). */
    private static final long PT_VA = 0x0000_6000_0000_0000L;

    private final Host host = Host.create(64 * MIB);

    @AfterEach
    void close() {
        host.close();
    }

    private Vm shadowVm(long bytes, int vcpus) {
        return host.createVm(VmConfig.of(bytes).withPaging(PagingMode.SHADOW).withVcpus(vcpus));
    }

    private static long exits(Vm vm, ExitReason r) {
        return vm.exits().get(r);
    }

    @Test
    void readWriteRoundTripThroughShadowTablesWithGuestAccessedAndDirtyBits() {
        Vm vm = shadowVm(16 * MIB, 1);
        GuestTables g = new GuestTables(vm);
        g.map(VA, 0x10_0000, Pte.P | Pte.RW);
        Vcpu cpu = vm.vcpu(0);
        g.boot(cpu);
        assertEquals(1, exits(vm, ExitReason.CR3_LOAD));
        vm.writePhysicalLong(0x10_0010, 0x4242);

        assertEquals(0x4242, cpu.readLong(VA + 0x10));
        long fills = exits(vm, ExitReason.PAGE_FAULT);
        assertTrue(fills >= 1, "a shadow miss exits as #PF");
        long leaf = vm.readPhysicalLong(g.leafGpa(VA));
        assertTrue((leaf & Pte.A) != 0, "guest A set by the engine's walk");
        assertEquals(0, leaf & Pte.D, "a read does not dirty");
        long pml4e = vm.readPhysicalLong(g.tables.root() + ((long) Pte.index(VA, 4) << 3));
        assertTrue((pml4e & Pte.A) != 0, "A set in the upper levels too");

        cpu.writeLong(VA + 8, 0x1122_3344_5566_7788L);
        assertEquals(fills + 1, exits(vm, ExitReason.PAGE_FAULT), "the first write faults: the shadow leaf was read-only");
        assertTrue((vm.readPhysicalLong(g.leafGpa(VA)) & Pte.D) != 0, "guest D set on the first write");
        cpu.writeLong(VA + 16, 5);
        assertEquals(fills + 1, exits(vm, ExitReason.PAGE_FAULT), "later writes run without exits");
        assertEquals(0x1122_3344_5566_7788L, cpu.readLong(VA + 8));
        assertEquals(0x1122_3344_5566_7788L, vm.readPhysicalLong(0x10_0008), "the guest-physical view agrees");
        assertEquals(0, exits(vm, ExitReason.PAGE_FAULT_INJECTED));
        assertEquals(0, exits(vm, ExitReason.EPT_VIOLATION));
    }

    @Test
    void guestLargePagesAreShadowedByFourKilobytePages() {
        Vm vm = shadowVm(16 * MIB, 1);
        GuestTables g = new GuestTables(vm);
        g.tables.map(VA, 0x20_0000, Pte.SHIFT_2M, Pte.P | Pte.RW | Pte.US);
        g.tables.map(0x0000_4000_0000_0000L, 0, Pte.SHIFT_1G, Pte.P | Pte.RW); // 1 GiB, beyond 16 MiB at its top
        Vcpu cpu = vm.vcpu(0);
        g.boot(cpu);
        cpu.writeLong(VA + 0x12_3458, 77);
        assertEquals(77, vm.readPhysicalLong(0x20_0000 + 0x12_3458));
        cpu.writeLong(0x0000_4000_0000_0000L + 0x50_0008, 88);
        assertEquals(88, vm.readPhysicalLong(0x50_0008));
        assertEquals(88, cpu.readLong(0x0000_4000_0000_0000L + 0x50_0008));
        long large = vm.readPhysicalLong(g.tables.leafAddress(VA));
        assertTrue((large & (Pte.A | Pte.D)) == (Pte.A | Pte.D), "A/D set in the guest's 2 MiB entry");
        GuestFaultException mc = assertThrows(GuestFaultException.class,
            () -> cpu.readLong(0x0000_4000_0000_0000L + 0x200_0000), "the 1 GiB page reaches past guest memory");
        assertEquals(Fault.MACHINE_CHECK, mc.fault());
    }

    @Test
    void guestVisibleFaultsAreInjectedWithTheGuestWalksErrorCode() {
        Vm vm = shadowVm(16 * MIB, 1);
        GuestTables g = new GuestTables(vm);
        g.map(VA, 0x10_0000, Pte.P | Pte.US); // user, read-only
        g.map(VA + 0x1000, 0x11_0000, Pte.P | Pte.RW); // supervisor only
        g.map(VA + 0x2000, 0x12_0000, Pte.P | Pte.RW | Pte.US | Pte.NX); // no-execute
        g.map(VA + 0x3000, 0x13_0000, Pte.P | Pte.RW | Pte.US);
        long rsvd = g.leafGpa(VA + 0x3000);
        vm.writePhysicalLong(rsvd, vm.readPhysicalLong(rsvd) | (1L << 50)); // above MAXPHYADDR 46
        Vcpu cpu = vm.vcpu(0);
        g.boot(cpu);
        AtomicLong seenCr2 = new AtomicLong();
        AtomicLong seenCode = new AtomicLong();
        long[] nextGfn = {0x300};
        cpu.setPageFaultHandler((vcpu, cr2, errorCode) -> {
            seenCr2.set(cr2);
            seenCode.set(errorCode);
            if ((errorCode & Fault.PF_P) != 0) {
                return false;
            }
            g.map(cr2 & ~0xFFFL, (nextGfn[0]++) << 12, Pte.P | Pte.RW | Pte.US); // demand-zero
            return true;
        });
        cpu.setUserMode(true);
        assertEquals(0, cpu.readLong(VA + 0x5008), "demand-zero page mapped by the guest's handler");
        assertEquals(VA + 0x5008, seenCr2.get());
        assertEquals(Fault.PF_U, seenCode.get());
        assertEquals(1, exits(vm, ExitReason.PAGE_FAULT_INJECTED));
        assertEquals(1, cpu.guestPageFaults());
        cpu.writeLong(VA + 0x5010, 9);
        assertEquals(9, vm.readPhysicalLong(0x300_010));

        cpu.readLong(VA);
        assertFault(Fault.PF_P | Fault.PF_W | Fault.PF_U, VA + 8, () -> cpu.writeLong(VA + 8, 1));
        assertFault(Fault.PF_P | Fault.PF_U, VA + 0x1000, () -> cpu.readLong(VA + 0x1000));
        assertFault(Fault.PF_P | Fault.PF_U | Fault.PF_ID, VA + 0x2000, () -> cpu.fetch(VA + 0x2000));
        assertFault(Fault.PF_P | Fault.PF_RSVD | Fault.PF_U, VA + 0x3000, () -> cpu.readLong(VA + 0x3000));
        cpu.setUserMode(false);
        cpu.writeLong(VA + 0x1000, 3); // the supervisor may
        assertEquals(3, vm.readPhysicalLong(0x11_0000));
        assertFault(Fault.PF_P | Fault.PF_W, VA, () -> cpu.writeLong(VA, 1)); // CR0.WP: not even the supervisor
        cpu.setCr4(cpu.mmu().registers().cr4() | ControlRegisters.CR4_SMEP);
        assertFault(Fault.PF_P | Fault.PF_ID, VA, () -> cpu.fetch(VA)); // SMEP
        GuestFaultException gp = assertThrows(GuestFaultException.class, () -> cpu.readLong(0x0000_8000_0000_0000L));
        assertEquals(Fault.GENERAL_PROTECTION, gp.fault());
    }

    private static void assertFault(int code, long cr2, org.junit.jupiter.api.function.Executable access) {
        GuestFaultException e = assertThrows(GuestFaultException.class, access);
        assertEquals(Fault.PAGE_FAULT, e.fault(), e.getMessage());
        assertEquals(code, e.errorCode(), e.getMessage());
        assertEquals(cr2, e.address());
    }

    @Test
    void guestWritesToItsOwnPageTablesTrapAndResync() {
        Vm vm = shadowVm(16 * MIB, 1);
        GuestTables g = new GuestTables(vm);
        g.map(VA, 0x10_0000, Pte.P | Pte.RW);
        long leafGpa = g.leafGpa(VA);
        long ptGfn = leafGpa >>> 12;
        g.map(PT_VA, ptGfn << 12, Pte.P | Pte.RW | Pte.A | Pte.D); // the kernel's window on its PT page
        vm.writePhysicalLong(0x10_0000, 111);
        vm.writePhysicalLong(0x40_0000, 222);
        Vcpu cpu = vm.vcpu(0);
        g.boot(cpu);
        assertEquals(111, cpu.readLong(VA));
        long entry = cpu.readLong(PT_VA + (leafGpa & 0xFFF));
        assertEquals(0x10_0000, entry & Pte.ADDRESS_MASK, "the guest reads its own PTE");
        assertEquals(0, exits(vm, ExitReason.WRITE_PROTECT), "reads of a page table are not trapped");

        cpu.writeLong(PT_VA + (leafGpa & 0xFFF), Pte.entry(0x40_0000, Pte.P | Pte.RW));
        assertEquals(1, exits(vm, ExitReason.WRITE_PROTECT), "the write to the shadowed table trapped");
        assertEquals(Pte.entry(0x40_0000, Pte.P | Pte.RW), vm.readPhysicalLong(leafGpa), "and was performed");
        assertEquals(222, cpu.readLong(VA), "the next access sees the new mapping");
        cpu.writeLong(VA + 8, 5);
        assertEquals(5, vm.readPhysicalLong(0x40_0008));
        assertEquals(0, vm.readPhysicalLong(0x10_0008), "the old frame is not written");

        cpu.writeLong(PT_VA + (leafGpa & 0xFFF), 0); // unmap
        GuestFaultException e = assertThrows(GuestFaultException.class, () -> cpu.readLong(VA));
        assertEquals(Fault.PAGE_FAULT, e.fault());
        assertEquals(0, e.errorCode());
        assertEquals(2, exits(vm, ExitReason.WRITE_PROTECT));
        assertEquals(1, exits(vm, ExitReason.PAGE_FAULT_INJECTED));
    }

    @Test
    void invlpgExitsAndDropsTheShadowLeaf() {
        Vm vm = shadowVm(16 * MIB, 1);
        GuestTables g = new GuestTables(vm);
        g.map(VA, 0x10_0000, Pte.P | Pte.RW);
        vm.writePhysicalLong(0x10_0000, 1);
        vm.writePhysicalLong(0x20_0000, 2);
        Vcpu cpu = vm.vcpu(0);
        g.boot(cpu);
        assertEquals(1, cpu.readLong(VA));
        // a bootloader-style edit the engine cannot see: the guest invalidates the address as it must
        vm.writePhysicalLong(g.leafGpa(VA), Pte.entry(0x20_0000, Pte.P | Pte.RW));
        cpu.invlpg(VA);
        assertEquals(1, exits(vm, ExitReason.INVLPG));
        assertEquals(2, cpu.readLong(VA));
    }

    @Test
    void shadowRootsAreCachedPerGuestRootAndPcidsKeepTheirTlbEntries() {
        Vm vm = shadowVm(16 * MIB, 1);
        GuestTables a = new GuestTables(vm);
        a.map(VA, 0x10_0000, Pte.P | Pte.RW);
        long[] nextB = {0x800}; // b's tables elsewhere
        PageTables bt = new PageTables(host.memory(), PageTables.Format.X86, 4,
            () -> {
                long gfn = nextB[0]--;
                host.memory().zeroFrame(GuestTables.populate(vm, gfn));
                return gfn << 12;
            },
            gpa -> (GuestTables.populate(vm, gpa >>> 12) << 12) | (gpa & 0xFFF));
        bt.map(VA, 0x20_0000, Pte.SHIFT_4K, Pte.P | Pte.RW);
        vm.writePhysicalLong(0x10_0000, 10);
        vm.writePhysicalLong(0x20_0000, 20);
        Vcpu cpu = vm.vcpu(0);
        a.boot(cpu); // PCID 0
        assertEquals(10, cpu.readLong(VA));
        cpu.loadCr3(bt.root() | 1);
        assertEquals(20, cpu.readLong(VA));
        long faults = exits(vm, ExitReason.PAGE_FAULT);
        long freeFrames = host.frames().freeFrames();
        cpu.loadCr3(a.tables.root() | ControlRegisters.CR3_NO_FLUSH);
        long hits = cpu.mmu().stats().tlbHits();
        assertEquals(10, cpu.readLong(VA));
        assertTrue(cpu.mmu().stats().tlbHits() > hits, "the no-flush bit kept PCID 0's TLB entries");
        cpu.loadCr3(bt.root() | 1); // flushes PCID 1: the shadow tables still serve the walk
        assertEquals(20, cpu.readLong(VA));
        assertEquals(faults, exits(vm, ExitReason.PAGE_FAULT), "switching back rebuilt nothing");
        assertEquals(freeFrames, host.frames().freeFrames(), "and allocated no shadow frame");
        assertEquals(4, exits(vm, ExitReason.CR3_LOAD));
    }

    @Test
    void fiveLevelGuestTablesWithLa57() {
        Vm vm = host.createVm(VmConfig.of(16 * MIB).withPaging(PagingMode.SHADOW).withLevels(5));
        long[] next = {0xFFF};
        PageTables t = new PageTables(host.memory(), PageTables.Format.X86, 5,
            () -> {
                long gfn = next[0]--;
                host.memory().zeroFrame(GuestTables.populate(vm, gfn));
                return gfn << 12;
            },
            gpa -> (GuestTables.populate(vm, gpa >>> 12) << 12) | (gpa & 0xFFF));
        long va57 = 0x00AB_0000_0000_0000L; // needs the PML5 index
        t.map(va57, 0x30_0000, Pte.SHIFT_4K, Pte.P | Pte.RW);
        Vcpu cpu = vm.vcpu(0);
        cpu.setCr4(ControlRegisters.CR4_LA57);
        cpu.loadCr3(t.root());
        cpu.writeLong(va57 + 16, 57);
        assertEquals(57, vm.readPhysicalLong(0x30_0010));
        assertEquals(57, cpu.readLong(va57 + 16));
        assertTrue((vm.readPhysicalLong(t.root() + ((long) Pte.index(va57, 5) << 3)) & Pte.A) != 0, "PML5E accessed");
    }

    @Test
    @Timeout(value = 30, unit = TimeUnit.SECONDS)
    void aRemappedPageIsNeverReadThroughAStaleTranslationAfterTheShootdown() throws Exception {
        Vm vm = shadowVm(16 * MIB, 2);
        GuestTables g = new GuestTables(vm);
        g.map(VA, 0x100L << 12, Pte.P | Pte.RW);
        long leafGpa = g.leafGpa(VA);
        g.map(PT_VA, leafGpa & ~0xFFFL, Pte.P | Pte.RW | Pte.A | Pte.D);
        long marker = 0x0BAD_0BAD_0BAD_0BADL;
        vm.writePhysicalLong(0x100L << 12, 0);
        AtomicLong published = new AtomicLong();
        AtomicBoolean stop = new AtomicBoolean();
        AtomicLong reads = new AtomicLong();
        AtomicLong acked = new AtomicLong();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        Vcpu remapper = vm.vcpu(0);
        Vcpu reader = vm.vcpu(1);
        g.boot(remapper);
        Thread t = new Thread(() -> {
            try {
                g.boot(reader);
                reader.run(() -> {
                    while (!stop.get()) {
                        long round = published.get();
                        long v = reader.readLong(VA);
                        reads.incrementAndGet();
                        if (v == marker || v < round) {
                            throw new AssertionError("stale read " + Long.toHexString(v) + " in round " + round);
                        }
                    }
                });
            } catch (Throwable e) {
                failure.set(e);
            }
        });
        t.start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        int rounds = 0;
        remapper.run(() -> {
            for (long round = 1; round <= 200 && System.nanoTime() < deadline && failure.get() == null; round++) {
                long oldGfn = 0x100 + round - 1;
                long newGfn = 0x100 + round;
                vm.writePhysicalLong(newGfn << 12, round);
                long target = reads.get() + 50;
                while (reads.get() < target && t.isAlive()) {
                    remapper.relax();
                }
                remapper.writeLong(PT_VA + (leafGpa & 0xFFF), Pte.entry(newGfn << 12, Pte.P | Pte.RW)); // trapped
                remapper.invlpg(VA);
                long r = round;
                reader.sendIpi(v -> {
                    v.invlpg(VA);
                    acked.set(r);
                });
                while (acked.get() < round && t.isAlive()) { // awaitIpi, but bounded by the reader's life
                    remapper.relax();
                }
                if (!t.isAlive()) {
                    return;
                }
                published.set(round);
                vm.writePhysicalLong(oldGfn << 12, marker); // the old frame gets reused for something else
            }
        });
        rounds = (int) published.get();
        stop.set(true);
        t.join(10_000);
        if (failure.get() != null) {
            throw new AssertionError(failure.get());
        }
        assertTrue(rounds > 5, "rounds " + rounds);
        assertTrue(exits(vm, ExitReason.WRITE_PROTECT) >= rounds);
        assertTrue(exits(vm, ExitReason.INVLPG) >= 2L * rounds);
    }
}
