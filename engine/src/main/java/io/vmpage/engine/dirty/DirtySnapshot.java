package io.vmpage.engine.dirty;

import java.util.function.LongConsumer;

/**
 * The guest frames one harvest of a {@link DirtyLog} reported (KVM's {@code GET_DIRTY_LOG} buffer), on
 * the heap, reusable: {@link DirtyLog#harvest} clears it before filling it. Not thread-safe.
 */
public final class DirtySnapshot {
    private final long frames;
    final long[] words;
    long count;

    public DirtySnapshot(long frames) {
        if (frames <= 0 || frames > (1L << 34)) {
            throw new IllegalArgumentException("dirty snapshot of " + frames + " frames must cover 1 to 2^34 frames");
        }
        this.frames = frames;
        this.words = new long[(int) ((frames + 63) >>> 6)];
    }

    public long frames() {
        return frames;
    }

    /** Frames reported. */
    public long count() {
        return count;
    }

    public boolean isDirty(long gfn) {
        if (gfn < 0 || gfn >= frames) {
            throw new IndexOutOfBoundsException("guest frame 0x" + Long.toHexString(gfn) + " is outside a snapshot of " + frames + " frames");
        }
        return (words[(int) (gfn >>> 6)] & (1L << gfn)) != 0;
    }

    /** The first reported frame at or after {@code gfn}, or -1. */
    public long next(long gfn) {
        if (gfn < 0) {
            gfn = 0;
        }
        if (gfn >= frames) {
            return -1;
        }
        int i = (int) (gfn >>> 6);
        long w = words[i] & (-1L << gfn);
        while (true) {
            if (w != 0) {
                return ((long) i << 6) + Long.numberOfTrailingZeros(w);
            }
            if (++i == words.length) {
                return -1;
            }
            w = words[i];
        }
    }

    /** Calls {@code action} with each reported frame, in ascending order. */
    public void forEach(LongConsumer action) {
        for (int i = 0; i < words.length; i++) {
            long w = words[i];
            while (w != 0) {
                action.accept(((long) i << 6) + Long.numberOfTrailingZeros(w));
                w &= w - 1;
            }
        }
    }

    /** Reports nothing. */
    public void clear() {
        java.util.Arrays.fill(words, 0);
        count = 0;
    }

    void add(long gfn) {
        long bit = 1L << gfn;
        int i = (int) (gfn >>> 6);
        if ((words[i] & bit) == 0) {
            words[i] |= bit;
            count++;
        }
    }
}
