package io.vmpage.engine.guest;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.vmpage.engine.Host;
import io.vmpage.engine.HostOutOfMemoryException;
import io.vmpage.engine.LoggedGuest;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * A demand fault the host has no machine frame for fails the access with HostOutOfMemoryException and
 * leaves the guest kernel as it was: the guest frame it took for the page goes back on its free list, so
 * the access succeeds once the host has memory again, and no guest frame is lost.
 */
class GuestKernelHostOutOfMemoryTest {
    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    void aFaultTheHostCannotBackLosesNoGuestFrameAndRetriesLater(PagingMode mode) {
        try (Host host = Host.create(24L << 20)) {
            LoggedGuest g = new LoggedGuest(host, mode, 1, 1);
            Vcpu cpu = g.vm.vcpu(0);
            long page = LoggedGuest.page(1) + (2L << 20); // another page table's worth away: the fault needs a table and a page
            g.kernel.mmap(g.space, page, 4096, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE);
            Vm filler = host.createVm(VmConfig.of(32L << 20));
            byte[] bytes = new byte[4096];
            try {
                for (long gpa = 0; ; gpa += 4096) { // every machine frame taken
                    bytes[0] = 1;
                    filler.writePhysical(gpa, bytes, 0, bytes.length);
                }
            } catch (HostOutOfMemoryException expected) {
                // the host is full
            }
            int free = g.kernel.freeFrameCount();
            assertThrows(HostOutOfMemoryException.class, () -> cpu.writeLong(page, 42));
            assertEquals(free, g.kernel.freeFrameCount(), "the frames the fault took are back on the guest's free list");
            host.destroyVm(filler);
            cpu.writeLong(page, 42);
            assertEquals(42, cpu.readLong(page));
            assertEquals(free - 2, g.kernel.freeFrameCount(), "the retry took a table and the page, nothing more");
        }
    }
}
