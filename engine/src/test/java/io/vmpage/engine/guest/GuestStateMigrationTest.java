package io.vmpage.engine.guest;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.mmu.MachineMemory;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The guest kernel's and the program's state outside guest memory moves with the VM: a seeded program
 * stopped half way, moved to another host (memory, vCPU state, kernel and program state), and run on
 * there observes exactly what the same program observes without the move, in every paging mode.
 */
class GuestStateMigrationTest {
    private static final long MIB = 1L << 20;
    private static final int HALF = 2000;

    @ParameterizedTest(name = "{0} {1} seed {2}")
    @CsvSource({"NESTED, mixed, 1", "SHADOW, mixed, 1", "PARAVIRTUAL, mixed, 1", "NESTED, churn, 2", "SHADOW, churn, 2",
        "PARAVIRTUAL, churn, 2"})
    void aProgramMovedHalfWayObservesWhatItObservesUnmoved(PagingMode mode, String workload, long seed) {
        GuestProgram.Trace reference;
        try (Host host = Host.create(96 * MIB)) {
            GuestKernel kernel = GuestKernel.boot(host.createVm(VmConfig.of(32 * MIB).withPaging(mode)));
            reference = new GuestProgram(kernel, GuestProgram.Mix.named(workload), seed).run(2 * HALF);
        }
        try (Host source = Host.create(96 * MIB); Host destination = Host.create(96 * MIB)) {
            Vm vm = source.createVm(VmConfig.of(32 * MIB).withPaging(mode));
            GuestKernel kernel = GuestKernel.boot(vm);
            GuestProgram program = new GuestProgram(kernel, GuestProgram.Mix.named(workload), seed);
            program.run(HALF);
            vm.pause();
            byte[] kernelState = kernel.saveState();
            byte[] programState = program.saveState();
            Vm moved = copy(vm, destination);
            moved.importState(vm.exportState());
            moved.resume();
            source.destroyVm(vm); // nothing of the source is left to lean on
            GuestProgram.Trace after = GuestProgram.restore(GuestKernel.restore(moved, kernelState), programState).run(HALF);
            assertTrue(reference.faults() > 0 && reference.count() > 1000, "a program that faults and observes");
            assertEquals(reference.count(), after.count(), "trace length");
            assertArrayEquals(reference.values(), after.values(), "the moved program observed something else");
            assertEquals(reference.faults(), after.faults());
        }
    }

    @Test
    void statesThatAreNotTheirsAreRefused() {
        try (Host host = Host.create(96 * MIB)) {
            Vm vm = host.createVm(VmConfig.of(32 * MIB));
            GuestKernel kernel = GuestKernel.boot(vm);
            assertThrows(IllegalArgumentException.class, () -> GuestKernel.restore(vm, new byte[] {1, 2, 3, 4, 5}));
            byte[] state = kernel.saveState();
            assertThrows(IllegalArgumentException.class, () -> GuestKernel.restore(vm, java.util.Arrays.copyOf(state, state.length - 3)));
            Vm small = host.createVm(VmConfig.of(16 * MIB));
            IllegalArgumentException outside = assertThrows(IllegalArgumentException.class, () -> GuestKernel.restore(small, state));
            assertTrue(outside.getMessage().contains("free frames") || outside.getMessage().contains("outside"), outside.getMessage());
            IllegalArgumentException notProgram = assertThrows(IllegalArgumentException.class, () -> GuestProgram.restore(kernel, state));
            assertTrue(notProgram.getMessage().contains("guest program state"), notProgram.getMessage());
        }
    }

    /** A paused VM on {@code host} with {@code vm}'s configuration and memory, never run. */
    private static Vm copy(Vm vm, Host host) {
        Vm copy = host.createVm(vm.config());
        copy.pause();
        byte[] page = new byte[MachineMemory.FRAME_SIZE];
        for (long gfn = 0; gfn < vm.physicalMap().frames(); gfn++) {
            if (vm.physicalMap().machineFrame(gfn) >= 0) {
                vm.readPhysical(gfn << MachineMemory.FRAME_SHIFT, page, 0, page.length);
                copy.writePhysical(gfn << MachineMemory.FRAME_SHIFT, page, 0, page.length);
            }
        }
        return copy;
    }
}
