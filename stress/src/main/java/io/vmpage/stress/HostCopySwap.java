package io.vmpage.stress;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.mmu.MachineMemory;
import org.openjdk.jcstress.infra.results.III_Result;

/**
 * The one-copy path of an in-process migration ({@code Vm.copyFrameFrom}, {@code Vm.copyFramesFrom}), on the
 * engine's own {@code Vm} and {@code SwapDevice}: a target VM on another host copies a page out of a source
 * VM while the source host swaps that page out. Results: (whether the swap-out took the page, the word the
 * target's copy holds, the source's word afterwards, swapped back in if it is on swap). Only (x, 7, 7) is
 * allowed: the copy reads the page under the source's host-access guard, so a frame that is away on swap
 * (or on its way there) is brought back in and read, never read as the zeros of a frame that is not there,
 * and never read after the source gave it back to the host.
 *
 * <p>Each trial has a source VM on {@link SwapStore#HOST} (with its swap file) and a target VM on a host of
 * its own kind, both destroyed by the arbiter.
 */
final class HostCopySwap {
    static final Host TARGETS = Host.create(256L << 20);
    private static final long VALUE = 7;

    private HostCopySwap() {
    }

    /** One trial's pair: the source's page holds 7 (written by its guest, TLB warm), the target is empty. */
    record Pair(PauseRetire.Guest source, Vm target) {
        long gfn() {
            return source.gpa() >>> MachineMemory.FRAME_SHIFT;
        }
    }

    static Pair pair(PagingMode mode) {
        PauseRetire.Guest g = TrialGuests.create(SwapStore.HOST, mode);
        g.vm().vcpu(0).writeLong(TrialGuests.VA, VALUE);
        return new Pair(g, TARGETS.createVm(VmConfig.of(g.vm().config().memoryBytes()).withPaging(mode)));
    }

    static void swapOut(Pair p, III_Result r) {
        r.r1 = p.source().vm().swapOut(p.gfn()) ? 1 : 0;
    }

    /** The target's copy of the page, one by one or as a batch of one, and the word it holds. */
    static void copy(Pair p, boolean batched, III_Result r) {
        if (batched) {
            p.target().copyFramesFrom(p.source().vm(), new long[] {p.gfn()}, 1);
        } else {
            p.target().copyFrameFrom(p.source().vm(), p.gfn());
        }
        r.r2 = (int) p.target().readPhysicalLong(p.source().gpa());
    }

    static void after(Pair p, III_Result r) {
        r.r3 = (int) p.source().vm().readPhysicalLong(p.source().gpa());
        SwapStore.HOST.destroyVm(p.source().vm());
        TARGETS.destroyVm(p.target());
    }
}
