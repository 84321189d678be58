package io.vmpage.engine.paging.nested;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.ExitReason;
import io.vmpage.engine.GuestFaultException;
import io.vmpage.engine.GuestTables;
import io.vmpage.engine.Host;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.memory.FrameDescriptor;
import io.vmpage.engine.memory.FrameTable;
import io.vmpage.mmu.Fault;
import io.vmpage.mmu.Pte;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

class NestedPagingTest {
    private static final long MIB = 1L << 20;
    private static final long VA = 0x0000_7F00_0000_0000L;

    private final Host host = Host.create(64 * MIB);

    @AfterEach
    void close() {
        host.close();
    }

    /** Host-side reads of never-touched or discarded memory read zeros and allocate nothing (QEMU's zero page). */
    @Test
    void hostReadsOfUntouchedMemoryReadZerosWithoutPopulatingIt() {
        Vm vm = host.createVm(VmConfig.of(16 * MIB));
        long free = host.frames().freeFrames();
        byte[] all = new byte[(int) vm.memorySize()];
        java.util.Arrays.fill(all, (byte) 1);
        vm.readPhysical(0, all, 0, all.length);
        assertEquals(0, vm.readPhysicalLong(0x10_0008));
        for (byte b : all) {
            assertEquals(0, b);
        }
        assertEquals(0, vm.populatedFrames(), "reads populated nothing");
        assertEquals(free, host.frames().freeFrames());
        vm.writePhysicalLong(0x10_0008, 5);
        assertEquals(5, vm.readPhysicalLong(0x10_0008));
        assertEquals(1, vm.populatedFrames());
        assertTrue(vm.discardFrame(0x100));
        assertEquals(0, vm.readPhysicalLong(0x10_0008), "discarded: zeros");
        assertEquals(0, vm.populatedFrames(), "reading a discarded frame does not bring it back");
    }

    @Test
    void guestMemoryIsPopulatedOnFirstTouchThroughEptViolations() {
        Vm vm = host.createVm(VmConfig.of(16 * MIB));
        assertEquals(0, vm.populatedFrames());
        GuestTables g = new GuestTables(vm);
        g.map(VA, 0x10_0000, Pte.P | Pte.RW);
        g.map(VA + 0x1000, 0x20_0000, Pte.P | Pte.RW);
        long tableFrames = vm.populatedFrames();
        assertEquals(4, tableFrames, "PML4, PDPT, PD, PT");
        Vcpu cpu = vm.vcpu(0);
        g.boot(cpu);

        cpu.writeLong(VA + 8, 0x1122_3344_5566_7788L);
        assertEquals(0x1122_3344_5566_7788L, cpu.readLong(VA + 8));
        assertEquals(0x1122_3344_5566_7788L, vm.readPhysicalLong(0x10_0008), "the guest-physical view agrees");
        assertEquals(5, vm.populatedFrames(), "one data frame more");
        assertEquals(5, vm.exits().get(ExitReason.EPT_VIOLATION), "one EPT violation per guest frame the hardware touched");

        cpu.writeLong(VA + 0x1000, 7);
        assertEquals(6, vm.populatedFrames());
        assertEquals(6, vm.exits().get(ExitReason.EPT_VIOLATION));
        assertEquals(0, vm.exits().get(ExitReason.CR3_LOAD), "with EPT, CR3 loads do not exit");
        long descriptor = host.frames().descriptor(vm.physicalMap().machineFrame(0x100));
        assertEquals(vm.id(), FrameDescriptor.owner(descriptor), "the frame is accounted to the VM");
    }

    @Test
    void guestPageFaultsReachTheGuestKernelWhichMapsDemandZeroPages() {
        Vm vm = host.createVm(VmConfig.of(16 * MIB));
        GuestTables g = new GuestTables(vm);
        g.map(VA, 0x10_0000, Pte.P | Pte.RW | Pte.US);
        Vcpu cpu = vm.vcpu(0);
        g.boot(cpu);
        AtomicLong seenCr2 = new AtomicLong();
        AtomicLong seenCode = new AtomicLong();
        long[] nextGfn = {0x300};
        cpu.setPageFaultHandler((vcpu, cr2, errorCode) -> {
            seenCr2.set(cr2);
            seenCode.set(errorCode);
            if ((errorCode & Fault.PF_P) != 0) {
                return false; // protection violation: the program is wrong
            }
            g.map(cr2 & ~0xFFFL, (nextGfn[0]++) << 12, Pte.P | Pte.RW | Pte.US); // demand-zero
            return true;
        });
        cpu.setUserMode(true);
        assertEquals(0, cpu.readLong(VA + 0x5008), "a demand-zero page reads zero");
        assertEquals(VA + 0x5008, seenCr2.get());
        assertEquals(Fault.PF_U, seenCode.get(), "user read of a not-present page");
        cpu.writeLong(VA + 0x5010, 99);
        assertEquals(99, vm.readPhysicalLong(0x300_010));
        assertEquals(1, cpu.guestPageFaults());

        g.tables.write(g.tables.leafAddress(VA), Pte.entry(0x10_0000, Pte.P | Pte.US)); // now read-only
        cpu.invlpg(VA);
        GuestFaultException e = assertThrows(GuestFaultException.class, () -> cpu.writeLong(VA, 1));
        assertEquals(Fault.PAGE_FAULT, e.fault());
        assertEquals(Fault.PF_P | Fault.PF_W | Fault.PF_U, e.errorCode());
        assertEquals(VA, e.address());

        GuestFaultException gp = assertThrows(GuestFaultException.class, () -> cpu.readLong(0x0000_8000_0000_0000L));
        assertEquals(Fault.GENERAL_PROTECTION, gp.fault());
    }

    @Test
    void unalignedAndPageCrossingAccesses() {
        Vm vm = host.createVm(VmConfig.of(16 * MIB));
        GuestTables g = new GuestTables(vm);
        g.map(VA, 0x10_0000, Pte.P | Pte.RW);
        g.map(VA + 0x1000, 0x50_0000, Pte.P | Pte.RW); // not physically contiguous
        Vcpu cpu = vm.vcpu(0);
        g.boot(cpu);
        cpu.writeLong(VA + 0xFFC, 0x0102_0304_0506_0708L);
        assertEquals(0x0102_0304_0506_0708L, cpu.readLong(VA + 0xFFC));
        assertEquals(0x0506_0708, vm.readPhysicalLong(0x10_0FF8) >>> 32, "low half on the first page");
        assertEquals(0x0102_0304L, vm.readPhysicalLong(0x50_0000) & 0xFFFF_FFFFL, "high half on the second");
        cpu.writeInt(VA + 0x21, 0xCAFE_BABE);
        assertEquals(0xCAFE_BABE, cpu.readInt(VA + 0x21));
        byte[] data = new byte[6000];
        new Random(5).nextBytes(data);
        cpu.write(VA + 100, data, 0, data.length);
        byte[] back = new byte[6000];
        cpu.read(VA + 100, back, 0, back.length);
        assertTrue(java.util.Arrays.equals(data, back));

        g.tables.write(g.tables.leafAddress(VA + 0x1000), Pte.entry(0x50_0000, Pte.P)); // second page read-only
        cpu.invlpg(VA + 0x1000);
        long before = vm.readPhysicalLong(0x10_0FF8);
        assertThrows(GuestFaultException.class, () -> cpu.writeLong(VA + 0xFFC, -1L));
        assertEquals(before, vm.readPhysicalLong(0x10_0FF8), "a faulting page-crossing store writes nothing");
    }

    @Test
    @Timeout(value = 30, unit = TimeUnit.SECONDS)
    void aDiscardedFrameIsNeverReachedAfterReuseByAnotherVm() throws Exception {
        Vm vm = host.createVm(VmConfig.of(8 * MIB).withVcpus(2));
        GuestTables g = new GuestTables(vm);
        g.map(VA, 0x10_0000, Pte.P | Pte.RW);
        vm.writePhysicalLong(0x10_0000, 1);
        Vm other = host.createVm(VmConfig.of(16 * MIB));
        long marker = 0x0BAD_0BAD_0BAD_0BADL;
        AtomicBoolean stop = new AtomicBoolean();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        AtomicLong readsAfterReuse = new AtomicLong();
        AtomicLong reads = new AtomicLong();
        AtomicBoolean reused = new AtomicBoolean();
        Vcpu reader = vm.vcpu(1);
        Thread t = new Thread(() -> {
            try {
                g.boot(reader);
                reader.run(() -> {
                    while (!stop.get()) {
                        long v = reader.readLong(VA);
                        reads.incrementAndGet();
                        if (v == marker) {
                            throw new AssertionError("read another VM's data through a stale translation");
                        }
                        if (reused.get()) {
                            readsAfterReuse.incrementAndGet();
                        }
                    }
                });
            } catch (Throwable e) {
                failure.set(e);
            }
        });
        t.start();
        for (int round = 0; round < 20 && failure.get() == null; round++) {
            long target = reads.get() + 1000;
            while ((reads.get() < target || vm.physicalMap().machineFrame(0x100) < 0) && t.isAlive()) {
                Thread.onSpinWait(); // the reader faulted the page back in and keeps reading it
            }
            assertTrue(vm.discardFrame(0x100), "frame discarded");
            // the freed frame goes to the other VM, which fills it with its own data
            for (long gpa = round * 64L * 4096; gpa < (round + 1) * 64L * 4096; gpa += 4096) {
                other.writePhysicalLong(gpa, marker);
            }
            reused.set(true);
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(2);
        while (readsAfterReuse.get() < 10_000 && System.nanoTime() < deadline && t.isAlive()) {
            Thread.onSpinWait();
        }
        stop.set(true);
        t.join(10_000);
        if (failure.get() != null) {
            throw new AssertionError(failure.get());
        }
        assertTrue(readsAfterReuse.get() > 0, "the reader kept reading after the frames were reused");
        assertEquals(0, vm.readPhysicalLong(0x10_0000), "the guest reads zeros where its frame was discarded");
    }

    @Test
    void badConfigurationIsRejectedWithAClearMessage() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> VmConfig.of(1000));
        assertTrue(e.getMessage().contains("1000"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> VmConfig.of(4096).withVcpus(0));
        assertThrows(IllegalArgumentException.class, () -> VmConfig.of(4096).withLevels(3));
    }
}
