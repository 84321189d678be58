package io.vmpage.engine.memory;

import io.vmpage.engine.Internal;
import io.vmpage.mmu.MachineMemory;

/**
 * The engine's mutating handle on a host's {@link FrameTable}: allocating and freeing machine frames,
 * changing descriptors, recording which guest frame a data frame backs. The host keeps it and hands it
 * to its VMs' paging backends; embedders see only the table ({@code Host.frames()}), so no program
 * outside the engine can free a frame a VM still maps.
 */
@Internal
public final class FrameAllocator {
    private final FrameTable table;

    /** A frame table over {@code memory} with the bottom {@code reserved} frames kept out of the pool. */
    public FrameAllocator(MachineMemory memory, long reserved) {
        this.table = new FrameTable(memory, reserved);
    }

    /** Machine frames in the table. */
    public long frames() {
        return table.frames();
    }

    /** The read-only view. */
    public FrameTable table() {
        return table;
    }

    /**
     * Takes a free frame, zero-filled, owned by {@code owner} with one reference and type {@code type}
     * ({@link FrameDescriptor}); -1 when none is left.
     */
    public long allocate(int owner, int type) {
        return table.allocate(owner, type);
    }

    /**
     * A free frame as {@link #allocate} gives it, but holding whatever it held last: the caller overwrites
     * all 4096 bytes before anyone else can reach it; -1 when none is left.
     */
    public long allocateForFill(int owner, int type) {
        return table.allocateForFill(owner, type);
    }

    /** Up to {@code n} frames for filling at once, into {@code frames}; how many it took. */
    public int allocateForFill(int owner, int type, long[] frames, int n) {
        return table.allocateForFill(owner, type, frames, n);
    }

    /** Returns {@code frame} to the pool. The caller must have removed every mapping of it. */
    public void free(long frame) {
        table.free(frame);
    }

    /** {@link #free} for {@code frames[0..n)} at once, as if one by one in that order. */
    public void free(long[] frames, int n) {
        table.free(frames, n);
    }

    /** The descriptor of {@code frame} (volatile read). */
    public long descriptor(long frame) {
        return table.descriptor(frame);
    }

    /** Replaces the descriptor of {@code frame} if it still equals {@code expected}. */
    public boolean compareAndSetDescriptor(long frame, long expected, long update) {
        return table.compareAndSetDescriptor(frame, expected, update);
    }

    /** Records that data frame {@code frame} backs guest frame {@code gfn} of its owner (Xen's M2P). */
    public void setGuestFrame(long frame, long gfn) {
        table.setGuestFrame(frame, gfn);
    }

    /** The guest frame {@code frame} backs, -1 when none. */
    public long guestFrame(long frame) {
        return table.guestFrame(frame);
    }
}
