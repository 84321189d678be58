package io.vmpage.engine;

import io.vmpage.mmu.MachineMemory;

/**
 * Brings in a guest frame that is not here: the one "fetch on fault" mechanism of the engine (QEMU's
 * userfaultfd handling in post-copy, a hypervisor's swap-in). A VM whose guest-physical map marks a
 * frame {@code REMOTE} ({@link Vm#markRemote}) or {@code SWAPPED} calls its fetcher
 * ({@link Vm#setFrameFetcher}) when a vCPU or a host access first touches the frame; the access then
 * retries on the frame the fetcher filled.
 */
@FunctionalInterface
public interface FrameFetcher {
    /**
     * Writes the 4096 bytes of guest frame {@code gfn} into host-physical {@code frameAddress} of
     * {@code memory}: a fresh frame that no vCPU can reach yet. {@code kind} and {@code payload} are
     * the frame's state ({@code P2mEntry.REMOTE}, or {@code SWAPPED} with the swap slot). Called once per
     * frame, on the thread that touched it (a vCPU in its exit, or a host access), which other threads
     * touching the frame wait for; it may block until the contents arrive. An exception it throws
     * fails that access and leaves the frame as it was (still not here).
     */
    void fetch(long gfn, int kind, long payload, MachineMemory memory, long frameAddress);
}
