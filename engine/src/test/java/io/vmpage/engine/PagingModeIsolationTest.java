package io.vmpage.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.mmu.Fault;
import io.vmpage.mmu.Pte;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Whatever a guest writes into its own page tables, it reaches only its own frames (nested: the EPT
 * confines it; shadow: the engine builds every hardware-visible entry from frames it populated for
 * this VM). Paravirtual guests cannot write their tables at all: see ParavirtualHostileGuestTest.
 */
class PagingModeIsolationTest {
    private static final long MIB = 1L << 20;
    private static final long VA = 0x0000_7F00_0000_0000L;

    private final Host host = Host.create(64 * MIB);

    @AfterEach
    void close() {
        host.close();
    }

    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    void aHostileGuestReachesOnlyItsOwnMemory(PagingMode mode) {
        Vm victim = host.createVm(VmConfig.of(8 * MIB).withPaging(mode));
        long secret = 0x5EC2_E75E_C2E7_5EC2L;
        for (long gpa = 0; gpa < victim.memorySize(); gpa += 4096) {
            victim.writePhysicalLong(gpa, secret);
        }
        Vm attacker = host.createVm(VmConfig.of(8 * MIB).withPaging(mode));
        GuestTables g = new GuestTables(attacker);
        Random r = new Random(11);
        // 512 pages at random guest-physical addresses, many beyond the attacker's 8 MiB, some with
        // high address bits set at random
        for (int i = 0; i < 512; i++) {
            long gpa = (r.nextLong() & 0x3FFF_FFFF_F000L) % (64 * MIB);
            long noise = r.nextInt(4) == 0 ? (1L << (40 + r.nextInt(6))) : 0;
            g.map(VA + ((long) i << 12), gpa, Pte.P | Pte.RW);
            long leaf = g.tables.leafAddress(VA + ((long) i << 12));
            g.tables.write(leaf, g.tables.read(leaf) | noise);
        }
        // and a guest page table placed beyond guest memory
        g.map(VA + 0x4000_0000L, 0x1000, Pte.P | Pte.RW);
        long pde = g.tables.entryAddress(VA + 0x4000_0000L, Pte.LEVEL_PD);
        g.tables.write(pde, Pte.entry(48 * MIB, Pte.P | Pte.RW));
        Vcpu cpu = attacker.vcpu(0);
        g.boot(cpu);
        int machineChecks = 0;
        int reads = 0;
        for (int i = 0; i < 512; i++) {
            try {
                long v = cpu.readLong(VA + ((long) i << 12));
                assertNotEquals(secret, v, "read another VM's data");
                cpu.writeLong(VA + ((long) i << 12), 0xA77AC4L);
                reads++;
            } catch (GuestFaultException e) {
                assertEquals(Fault.MACHINE_CHECK, e.fault(), e.getMessage());
                machineChecks++;
            }
        }
        assertTrue(reads > 0 && machineChecks > 0, reads + " reads, " + machineChecks + " machine checks");
        GuestFaultException e = assertThrows(GuestFaultException.class, () -> cpu.readLong(VA + 0x4000_0000L));
        assertEquals(Fault.MACHINE_CHECK, e.fault(), "a guest table beyond guest memory");
        for (long gpa = 0; gpa < victim.memorySize(); gpa += 4096) {
            assertEquals(secret, victim.readPhysicalLong(gpa), "the victim's memory is untouched");
        }
        assertTrue(attacker.populatedFrames() <= 8 * MIB / 4096, "the attacker holds no more frames than its memory");
    }

    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    void destroyingAVmReturnsEveryFrame(PagingMode mode) {
        long free = host.frames().freeFrames();
        Vm vm = host.createVm(VmConfig.of(8 * MIB).withPaging(mode));
        GuestTables g = new GuestTables(vm);
        for (int i = 0; i < 32; i++) {
            g.map(VA + ((long) i << 12), (long) i << 12, Pte.P | Pte.RW);
        }
        Vcpu cpu = vm.vcpu(0);
        g.boot(cpu);
        for (int i = 0; i < 32; i++) {
            cpu.writeLong(VA + ((long) i << 12), i);
        }
        assertTrue(host.frames().freeFrames() < free);
        host.destroyVm(vm);
        assertEquals(free, host.frames().freeFrames(), "guest frames and the engine's tables all returned");
    }

    /**
     * Under paravirtual paging a discard is Xen's decrease_reservation (what the guest gave up): a frame
     * the guest never populated has nothing to give, a populated frame nothing maps goes back to the host
     * (the refusals of mapped frames are ParavirtualPagingTest's), a frame beyond memory is refused.
     */
    @org.junit.jupiter.api.Test
    void discardingAParavirtualFrameGivesBackOnlyWhatThereIs() {
        Vm vm = host.createVm(VmConfig.of(8 * MIB).withPaging(PagingMode.PARAVIRTUAL));
        assertEquals(false, vm.discardFrame(1), "never populated");
        long free = host.frames().freeFrames();
        assertTrue(vm.vcpu(0).hypercalls().populatePhysmap(2) > 0);
        assertTrue(vm.discardFrame(2), "populated, mapped nowhere");
        assertEquals(free, host.frames().freeFrames());
        assertEquals(0, vm.populatedFrames());
        assertThrows(IllegalArgumentException.class, () -> vm.discardFrame(8 * MIB / 4096), "beyond guest memory");
    }

    /**
     * A discarded frame under nested and shadow paging: every translation to it goes first (the shadow
     * leaves of every alias are zapped), so after the host hands the frame to another VM the guest's next
     * read, through a TLB that held the old translation, gets a fresh zero frame, never the other VM's data.
     */
    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    void aDiscardedFrameIsUnreachableBeforeTheHostReusesIt(PagingMode mode) {
        LoggedGuest g = new LoggedGuest(host, mode, 1, 4);
        Vm other = host.createVm(VmConfig.of(4 * MIB));
        byte[] pattern = new byte[(int) (4 * MIB)];
        java.util.Arrays.fill(pattern, (byte) 0x55);
        other.writePhysical(0, pattern, 0, 4096); // its EPT tables exist now: the next frames it takes hold data
        Vcpu cpu = g.vm.vcpu(0);
        cpu.run(() -> cpu.writeLong(LoggedGuest.page(1), 0x77)); // the TLB holds the translation
        long mfn = g.vm.physicalMap().machineFrame(g.gfnOfPage[1]);
        long free = host.frames().freeFrames();
        assertTrue(g.vm.discardFrame(g.gfnOfPage[1]));
        assertEquals(free + 1, host.frames().freeFrames());
        other.writePhysical(4096, pattern, 4096, pattern.length - 4096);
        assertEquals(other.id(), io.vmpage.engine.memory.FrameDescriptor.owner(host.frames().descriptor(mfn)), "the other VM holds the frame now");
        cpu.run(() -> assertEquals(0, cpu.readLong(LoggedGuest.page(1)), "a fresh zero frame, not the other VM's 0x55"));
        host.destroyVm(other);
        host.destroyVm(g.vm);
    }
}
