package io.vmpage.engine.guest;

import static io.vmpage.engine.guest.GuestKernel.PROT_READ;
import static io.vmpage.engine.guest.GuestKernel.PROT_WRITE;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.GuestFaultException;
import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.VmConfig;
import io.vmpage.mmu.Fault;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** The guest kernel model driving the virtual hardware, in every paging mode it supports. */
class GuestKernelTest {
    private static final long MIB = 1L << 20;
    private static final long HEAP = 0x0000_5555_0000_0000L;

    private final Host host = Host.create(128 * MIB);

    @AfterEach
    void close() {
        host.close();
    }

    private GuestKernel boot(PagingMode mode, int vcpus) {
        return GuestKernel.boot(host.createVm(VmConfig.of(32 * MIB).withPaging(mode).withVcpus(vcpus)));
    }

    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW", "PARAVIRTUAL"})
    void demandZeroPagesMapUnmapAndProtect(PagingMode mode) {
        GuestKernel k = boot(mode, 1);
        Vcpu cpu = k.vm().vcpu(0);
        GuestKernel.AddressSpace as = k.createAddressSpace(cpu);
        k.switchTo(cpu, as);
        k.mmap(as, HEAP, 16 * 4096, PROT_READ | PROT_WRITE);
        cpu.setUserMode(true);
        assertEquals(0, cpu.readLong(HEAP + 0x3008), "demand-zero");
        for (int i = 0; i < 16; i++) {
            cpu.writeLong(HEAP + i * 4096L + 8 * i, 1000 + i);
        }
        for (int i = 0; i < 16; i++) {
            assertEquals(1000 + i, cpu.readLong(HEAP + i * 4096L + 8 * i));
        }
        assertEquals(16, cpu.guestPageFaults(), "one guest #PF per page");

        int free = k.freeFrameCount();
        k.mprotect(cpu, as, HEAP, 4 * 4096, PROT_READ);
        assertEquals(1000, cpu.readLong(HEAP));
        GuestFaultException ro = assertThrows(GuestFaultException.class, () -> cpu.writeLong(HEAP + 8, 1));
        assertEquals(Fault.PF_P | Fault.PF_W | Fault.PF_U, ro.errorCode());
        cpu.writeLong(HEAP + 4 * 4096 + 32, 5); // still writable past the protected range

        k.munmap(cpu, as, HEAP + 8 * 4096, 8 * 4096);
        assertEquals(free + 8, k.freeFrameCount(), "frames returned to the kernel");
        GuestFaultException gone = assertThrows(GuestFaultException.class, () -> cpu.readLong(HEAP + 9 * 4096 + 72));
        assertEquals(Fault.PF_U, gone.errorCode(), "not present, user read");
        assertThrows(GuestFaultException.class, () -> cpu.readLong(0x0000_1000_0000_0000L), "no mapping at all");
    }

    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW", "PARAVIRTUAL"})
    void addressSpacesAreIsolatedAndPcidsKeepTheirTlbEntries(PagingMode mode) {
        GuestKernel k = boot(mode, 1);
        Vcpu cpu = k.vm().vcpu(0);
        GuestKernel.AddressSpace a = k.createAddressSpace(cpu);
        GuestKernel.AddressSpace b = k.createAddressSpace(cpu);
        assertNotEquals(a.pcid(), b.pcid());
        for (GuestKernel.AddressSpace s : new GuestKernel.AddressSpace[] {a, b}) {
            k.mmap(s, HEAP, 4096, PROT_READ | PROT_WRITE);
            k.switchTo(cpu, s);
            cpu.setUserMode(true);
            cpu.writeLong(HEAP, s.pcid() * 111L);
            cpu.setUserMode(false);
        }
        k.switchTo(cpu, a);
        cpu.setUserMode(true);
        assertEquals(a.pcid() * 111L, cpu.readLong(HEAP));
        long hits = cpu.mmu().stats().tlbHits();
        cpu.readLong(HEAP + 8);
        assertTrue(cpu.mmu().stats().tlbHits() > hits, "switching back with the no-flush bit kept a's entries");
        cpu.setUserMode(false);
        k.switchTo(cpu, b);
        cpu.setUserMode(true);
        assertEquals(b.pcid() * 111L, cpu.readLong(HEAP), "same address, other space, other data");
    }

    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW", "PARAVIRTUAL"})
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void munmapShootsDownTheOtherVcpusTlb(PagingMode mode) throws Exception {
        GuestKernel k = boot(mode, 2);
        Vcpu cpu0 = k.vm().vcpu(0);
        Vcpu cpu1 = k.vm().vcpu(1);
        GuestKernel.AddressSpace as = k.createAddressSpace(cpu0);
        long marker = 0x7E57_7E57_7E57_7E57L;
        AtomicReference<Throwable> failure = new AtomicReference<>();
        AtomicBoolean faulted = new AtomicBoolean();
        AtomicLong reads = new AtomicLong();
        for (int round = 0; round < 10 && failure.get() == null; round++) {
            long va = HEAP + round * 0x10_0000L;
            k.mmap(as, va, 4096, PROT_READ | PROT_WRITE);
            faulted.set(false);
            reads.set(0);
            Thread reader = new Thread(() -> cpu1.run(() -> {
                try {
                    k.switchTo(cpu1, as);
                    cpu1.setUserMode(true);
                    cpu1.writeLong(va, 1);
                    while (true) {
                        long v = cpu1.readLong(va);
                        reads.incrementAndGet();
                        if (v == marker) {
                            throw new AssertionError("read a freed and reused frame through a stale TLB entry");
                        }
                    }
                } catch (GuestFaultException expected) {
                    faulted.set(true); // the page is gone: the shootdown reached this vCPU
                } catch (Throwable e) {
                    failure.set(e);
                } finally {
                    cpu1.setUserMode(false);
                }
            }));
            reader.start();
            long finalVa = va;
            cpu0.run(() -> {
                k.switchTo(cpu0, as);
                while (reads.get() < 2000 && reader.isAlive()) {
                    cpu0.relax();
                }
                k.munmap(cpu0, as, finalVa, 4096);
                // the freed frame is the next one handed out: fill it with the marker elsewhere
                long other = finalVa + 0x8_0000;
                k.mmap(as, other, 4096, PROT_READ | PROT_WRITE);
                cpu0.writeLong(other, marker);
                while (reader.isAlive()) {
                    cpu0.relax(); // keep serving IPIs while the reader runs into its fault
                }
            });
            reader.join(TimeUnit.SECONDS.toMillis(20));
            assertTrue(!reader.isAlive(), "reader stopped");
        }
        if (failure.get() != null) {
            throw new AssertionError(failure.get());
        }
        assertTrue(faulted.get());
    }
}
