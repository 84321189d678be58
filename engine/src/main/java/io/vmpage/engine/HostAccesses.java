package io.vmpage.engine;

import java.util.concurrent.atomic.AtomicLongArray;

/**
 * Host-side accesses to a VM's guest-physical memory in flight ({@link Vm#readPhysicalLong} and friends,
 * the guest page tables a bootloader builds), so that a frame leaving the VM (discard, the merge of a
 * shared page, destroy) is handed back to the host only once no host access can still be using it:
 * the host-side counterpart of a remote TLB flush, shaped like Linux's SRCU (two counters, an epoch
 * that selects one).
 *
 * <p>A reader {@link #enter}s before it looks the frame up in the p2m and {@link #exit}s after its last
 * load or store. {@link #synchronize}, called after the frame was removed from the p2m, flips the epoch
 * and waits until the counter of the old epoch drains, twice (see {@link #synchronize}): a reader that
 * incremented a counter before the drain saw it may still hold the old frame and is waited for; a reader
 * that increments it afterwards looks the p2m up after the removal and cannot find the old frame. Readers of the new epoch never hold a synchronize up, so a steady
 * stream of host accesses cannot starve it.
 *
 * <p><b>Memory ordering.</b> The counters are changed by atomic read-modify-writes and {@link #epoch} is
 * volatile, all sequentially consistent: a synchronizer that reads a counter as zero after its p2m
 * removal orders every later increment of that counter, and so the incrementing reader's p2m lookup,
 * after the removal.
 */
final class HostAccesses {
    /** Readers in flight per epoch parity, a cache line apart (index 0 and 8). */
    private final AtomicLongArray inFlight = new AtomicLongArray(16);
    /** Selects the counter new readers take. Written under this object's monitor by synchronizers. */
    private volatile int epoch;

    /** Starts a host access; pass the result to {@link #exit}. */
    int enter() {
        int slot = (epoch & 1) << 3;
        inFlight.incrementAndGet(slot);
        return slot;
    }

    /** Ends the host access that {@link #enter} returned {@code slot} for. */
    void exit(int slot) {
        inFlight.decrementAndGet(slot);
    }

    /**
     * Waits until every host access that started before this call has ended. Two flips, as SRCU does:
     * a reader that read the epoch before an earlier synchronize flipped it may sit in either counter,
     * and each flip drains one of them. Never called inside a host access (it would wait for itself).
     */
    synchronized void synchronize() {
        drainAfterFlip();
        drainAfterFlip();
    }

    private void drainAfterFlip() {
        int old = (epoch & 1) << 3;
        epoch++;
        for (int spins = 1; inFlight.get(old) != 0; spins++) {
            if ((spins & 63) == 0) {
                Thread.yield();
            } else {
                Thread.onSpinWait();
            }
        }
    }
}
