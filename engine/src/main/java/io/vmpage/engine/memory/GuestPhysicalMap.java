package io.vmpage.engine.memory;

import java.nio.ByteBuffer;
import org.agrona.concurrent.UnsafeBuffer;

/**
 * A VM's physical-to-machine map (Xen's P2M, KVM's memslot rmap base): one 64-bit entry per guest
 * frame, off-heap, in the layout and states of {@link P2mEntry}. This class is the read-only view an
 * embedder gets ({@code Vm.physicalMap()}); the engine changes entries through the
 * {@link PhysicalMapWriter} that owns the map.
 *
 * <p>Entries change only by CAS: two vCPUs touching the same new frame race to install; the loser
 * frees its frame and uses the winner's. Reads are volatile, pairing with the installing CAS, so a
 * reader that sees an entry also sees the zero-filled frame behind it.
 */
public final class GuestPhysicalMap {
    private final long frames;
    final UnsafeBuffer entries;

    GuestPhysicalMap(long frames) {
        if (frames <= 0 || frames > (Integer.MAX_VALUE >> 3)) {
            throw new IllegalArgumentException("guest memory of " + frames + " frames must be between 1 and 2^28 frames");
        }
        this.frames = frames;
        this.entries = new UnsafeBuffer(ByteBuffer.allocateDirect((int) (frames * 8)));
    }

    /** Guest frames covered. */
    public long frames() {
        return frames;
    }

    /** The machine frame backing {@code gfn} (private or shared), or -1 when none does. */
    public long machineFrame(long gfn) {
        return P2mEntry.frame(entries.getLongVolatile((int) gfn * 8));
    }

    /**
     * Whether {@code gfn} has contents somewhere: populated, on the host's swap, or not here yet (post-copy)
     * or on its way in; not when it was never populated or is in the balloon. What a migration sends.
     */
    public boolean hasContents(long gfn) {
        long e = entry(gfn);
        return e != P2mEntry.EMPTY && (P2mEntry.isPresent(e) || P2mEntry.kind(e) != P2mEntry.BALLOONED);
    }

    /** The entry of {@code gfn} (volatile read), decoded with {@link P2mEntry}. */
    public long entry(long gfn) {
        return entries.getLongVolatile((int) gfn * 8);
    }

    /** Whether {@code gfn} is a guest frame of this map. */
    public boolean contains(long gfn) {
        return gfn >= 0 && gfn < frames;
    }
}
