package io.vmpage.stress;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.swap.SwapDevice;
import io.vmpage.mmu.MachineMemory;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.openjdk.jcstress.infra.results.III_Result;

/**
 * Host swap's unhook-then-write protocol ({@code Vm.swapOut}), on the engine's own {@code Vm},
 * {@code Vcpu} and {@code SwapDevice}: a guest writer stores 1, 2, 3 to one word while another thread
 * swaps its page out. Results: (stores the writer completed, whether the swap-out took the page, the word
 * read back afterwards, through the fetch-on-fault path when it is on swap). Only (3, x, 3) is allowed:
 * every store completes (a store to a page being swapped out waits, then swaps it back in), and the last
 * one is what comes back; a store that landed in the frame after its contents went to the slot, or in a
 * frame already freed, is a lost write.
 *
 * <p>Each trial has its own VM ({@link TrialGuests#create}) on a shared host with a swap file of its own,
 * destroyed by the arbiter (which frees its slot); jcstress keeps at most 10,240 trials live.
 */
final class SwapStore {
    static final Host HOST = Host.create(768L << 20);

    static {
        try {
            Path file = Files.createTempFile("vmpage-jcstress-", ".swap");
            file.toFile().deleteOnExit();
            HOST.attachSwap(SwapDevice.create(file, 16_384));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private SwapStore() {
    }

    static PauseRetire.Guest guest(PagingMode mode) {
        return TrialGuests.create(HOST, mode);
    }

    /** The host's reclaimer: swaps the page out while the writer runs. */
    static void swapOut(PauseRetire.Guest g, III_Result r) {
        r.r2 = g.vm().swapOut(g.gpa() >>> MachineMemory.FRAME_SHIFT) ? 1 : 0;
    }

    /** The word once both are done (swapped back in if it is on swap); the VM goes, and its slot. */
    static void after(PauseRetire.Guest g, III_Result r) {
        r.r3 = (int) g.vm().readPhysicalLong(g.gpa());
        HOST.destroyVm(g.vm());
    }
}
