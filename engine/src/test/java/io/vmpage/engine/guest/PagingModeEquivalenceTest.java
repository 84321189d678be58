package io.vmpage.engine.guest;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The same seeded guest program (random maps, unmaps, protections, context switches, reads and writes)
 * in every paging mode: identical guest-visible results (every value read, every fault with its error
 * code and address) and byte-identical guest-physical memory.
 */
class PagingModeEquivalenceTest {
    private static final long MIB = 1L << 20;

    private record Run(PagingMode mode, GuestProgram.Trace trace, byte[] memory) {
    }

    @ParameterizedTest(name = "{0} seed {1}")
    @CsvSource({"mixed, 1", "churn, 2", "mixed, 3"})
    void everyModeSeesTheSameGuest(String workload, long seed) {
        List<Run> runs = new ArrayList<>();
        for (PagingMode mode : PagingMode.values()) {
            try (Host host = Host.create(96 * MIB)) {
                Vm vm = host.createVm(VmConfig.of(32 * MIB).withPaging(mode));
                GuestKernel kernel = GuestKernel.boot(vm);
                GuestProgram.Trace trace = new GuestProgram(kernel, GuestProgram.Mix.named(workload), seed).run(4000);
                byte[] memory = new byte[(int) vm.memorySize()];
                vm.readPhysical(0, memory, 0, memory.length);
                runs.add(new Run(mode, trace, memory));
            }
        }
        assertEquals(PagingMode.values().length, runs.size(), "every mode ran");
        Run reference = runs.get(0);
        assertTrue(reference.trace().faults() > 0, "the program saw faults");
        assertTrue(reference.trace().count() > 1000, "and values");
        for (Run other : runs.subList(1, runs.size())) {
            assertEquals(reference.trace().count(), other.trace().count(), other.mode() + " trace length");
            assertArrayEquals(reference.trace().values(), other.trace().values(), other.mode() + " observed something else");
            if (other.mode() != PagingMode.PARAVIRTUAL) { // PV tables hold machine frame numbers
                assertArrayEquals(reference.memory(), other.memory(), other.mode() + " guest memory differs");
            }
        }
    }
}
