package io.vmpage.engine.policy;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.Host;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.swap.SwapDevice;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** ESX's admission control: min + overhead reserved in machine memory, max - min on swap. */
class AdmissionControlTest {
    private static final long MIB = 1L << 20;

    @TempDir
    Path dir;

    @Test
    void vmsAreAdmittedWhileTheirReservationsFitAndRefusedWithWhatIsShort() {
        try (Host host = Host.create(64 * MIB)) {
            host.attachSwap(SwapDevice.create(dir.resolve("swap"), 64 * MIB / 4096)); // 64 MiB of swap
            Allocation half = new Allocation(16 * MIB, 1000);
            long overhead = Allocation.overheadBytes(32 * MIB, 1);
            Vm a = host.admitVm(VmConfig.of(32 * MIB), half);
            assertEquals(half, a.allocation());
            assertEquals(16 * MIB + overhead, host.reservedMemoryBytes());
            assertEquals(16 * MIB, host.reservedSwapBytes());
            Vm b = host.admitVm(VmConfig.of(32 * MIB), half); // 32 MiB + overheads reserved of 64: fits
            Vm c = host.admitVm(VmConfig.of(32 * MIB), new Allocation(0, 1000)); // swap: 16 + 16 + 32 = 64 MiB
            AdmissionException memory = assertThrows(AdmissionException.class,
                () -> host.admitVm(VmConfig.of(48 * MIB), new Allocation(32 * MIB, 1000)));
            assertTrue(memory.getMessage().contains("of machine memory reserved"), memory.getMessage());
            AdmissionException swap = assertThrows(AdmissionException.class,
                () -> host.admitVm(VmConfig.of(8 * MIB), new Allocation(4 * MIB, 1000)));
            assertTrue(swap.getMessage().contains("of swap for its memory above min") && !swap.getMessage().contains("machine memory"),
                swap.getMessage());
            long vms = host.vms().size();
            host.destroyVm(c); // its swap reservation goes with it
            assertEquals(vms - 1, host.vms().size());
            host.admitVm(VmConfig.of(8 * MIB), new Allocation(4 * MIB, 1000));
            host.destroyVm(a);
            host.destroyVm(b);
            assertTrue(host.reservedMemoryBytes() > 0);
        }
    }

    @Test
    void withoutSwapOnlyFullyReservedVmsAreAdmittedAndPlainVmsReserveNothing() {
        try (Host host = Host.create(64 * MIB)) {
            AdmissionException e = assertThrows(AdmissionException.class,
                () -> host.admitVm(VmConfig.of(16 * MIB), new Allocation(8 * MIB, 100)));
            assertTrue(e.getMessage().contains("no swap device"), e.getMessage());
            host.admitVm(VmConfig.of(16 * MIB), new Allocation(16 * MIB, 100)); // min = max: nothing to swap
            Vm plain = host.createVm(VmConfig.of(256 * MIB)); // not admitted: best effort, counted nowhere
            assertNull(plain.allocation());
            assertEquals(16 * MIB + Allocation.overheadBytes(16 * MIB, 1), host.reservedMemoryBytes());
            assertThrows(IllegalArgumentException.class, () -> host.admitVm(VmConfig.of(16 * MIB), new Allocation(32 * MIB, 100)));
            assertThrows(IllegalArgumentException.class, () -> new Allocation(4097, 100));
            assertThrows(IllegalArgumentException.class, () -> new Allocation(0, 0));
            assertEquals(160, Allocation.defaultsFor(16 * MIB).shares());
        }
    }
}
