package io.vmpage.engine;

import java.nio.ByteBuffer;
import org.agrona.concurrent.UnsafeBuffer;

/**
 * A VM's physical-to-machine map (Xen's P2M, KVM's memslot rmap base): one 64-bit entry per guest
 * frame, off-heap, installed lock-free on first touch.
 *
 * <pre>
 *  entry
 *   63..12                       11..1      0
 *  +-----------------------------+----------+---------+
 *  | machine frame number + 1    | reserved | present |     0 = not populated yet
 *  +-----------------------------+----------+---------+
 *  the reserved bits leave room for "shared", "ballooned", "on swap at slot N" states
 * </pre>
 *
 * <p>Entries change only by CAS: two vCPUs touching the same new frame race to install; the loser
 * frees its frame and uses the winner's. Reads are volatile, pairing with the installing CAS, so a
 * reader that sees an entry also sees the zero-filled frame behind it.
 */
public final class GuestPhysicalMap {
    static final long PRESENT = 1;
    static final int MFN_SHIFT = 12;

    private final long frames;
    private final UnsafeBuffer entries;

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

    /** The machine frame backing {@code gfn}, or -1 when not populated. */
    public long machineFrame(long gfn) {
        long e = entries.getLongVolatile((int) gfn * 8);
        return (e & PRESENT) != 0 ? (e >>> MFN_SHIFT) - 1 : -1;
    }

    /** Installs {@code mfn} for {@code gfn} if the slot is still empty; false if another thread won. */
    boolean install(long gfn, long mfn) {
        return entries.compareAndSetLong((int) gfn * 8, 0, ((mfn + 1) << MFN_SHIFT) | PRESENT);
    }

    /** Points {@code gfn} at {@code mfn} instead of {@code expected}; false when it no longer maps {@code expected}. */
    boolean replace(long gfn, long expected, long mfn) {
        return entries.compareAndSetLong((int) gfn * 8, ((expected + 1) << MFN_SHIFT) | PRESENT, ((mfn + 1) << MFN_SHIFT) | PRESENT);
    }

    /** Empties {@code gfn}'s slot if it still maps {@code mfn}; the caller frees the frame after flushing TLBs. */
    boolean remove(long gfn, long mfn) {
        return entries.compareAndSetLong((int) gfn * 8, ((mfn + 1) << MFN_SHIFT) | PRESENT, 0);
    }

    boolean contains(long gfn) {
        return gfn >= 0 && gfn < frames;
    }
}
