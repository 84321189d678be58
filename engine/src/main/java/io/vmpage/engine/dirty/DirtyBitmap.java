package io.vmpage.engine.dirty;

import java.nio.ByteBuffer;
import org.agrona.concurrent.UnsafeBuffer;

/**
 * One bit per guest frame, off-heap, set lock-free by any thread and harvested word by word.
 *
 * <pre>
 *  word w (8 bytes at offset 8w)
 *   63                                               0
 *  +--------------------------------------------------+
 *  | frame 64w+63  ...                   frame 64w+0  |
 *  +--------------------------------------------------+
 * </pre>
 *
 * <p><b>Protocol.</b> {@link #mark} reads the word first and returns without an atomic when the bit is
 * already set (the common case for a page written again and again), else sets it with a CAS loop.
 * {@link #harvestWord} takes a word with an atomic get-and-set to zero (KVM's {@code xchg} in
 * {@code kvm_get_dirty_log_protect}), skipping the atomic when the word reads zero. A mark racing with a
 * harvest is therefore either in the word the harvest took or left set for the next harvest: never lost.
 *
 * <p><b>Memory ordering.</b> Marks and harvests are full-fence atomics on the same word, so a harvester
 * that takes a bit also sees every store the marking thread made before marking.
 */
public final class DirtyBitmap {
    private final long frames;
    private final int words;
    private final UnsafeBuffer bits;

    /** A clean bitmap for {@code frames} guest frames (at most 2^34). */
    public DirtyBitmap(long frames) {
        if (frames <= 0 || frames > (1L << 34)) {
            throw new IllegalArgumentException("dirty bitmap of " + frames + " frames must cover 1 to 2^34 frames");
        }
        this.frames = frames;
        this.words = (int) ((frames + 63) >>> 6);
        this.bits = new UnsafeBuffer(ByteBuffer.allocateDirect(Math.multiplyExact(words, 8)));
    }

    public long frames() {
        return frames;
    }

    /** Number of 64-bit words. */
    public int words() {
        return words;
    }

    /** Sets {@code gfn}'s bit; true when this call set it, false when it was already set. */
    public boolean mark(long gfn) {
        int at = offset(gfn);
        long bit = 1L << gfn;
        long w = bits.getLongVolatile(at);
        while ((w & bit) == 0) {
            if (bits.compareAndSetLong(at, w, w | bit)) {
                return true;
            }
            w = bits.getLongVolatile(at);
        }
        return false;
    }

    /** Whether {@code gfn}'s bit is set now. */
    public boolean isDirty(long gfn) {
        return (bits.getLongVolatile(offset(gfn)) & (1L << gfn)) != 0;
    }

    /** Atomically takes word {@code index} and leaves it zero. */
    public long harvestWord(int index) {
        int at = index << 3;
        return bits.getLongVolatile(at) == 0 ? 0 : bits.getAndSetLong(at, 0);
    }

    /** Takes every word into {@code snapshot} (OR-ed into what it holds); returns the number of frames taken. */
    public long harvest(DirtySnapshot snapshot) {
        if (snapshot.frames() != frames) {
            throw new IllegalArgumentException("snapshot of " + snapshot.frames() + " frames cannot take a bitmap of " + frames);
        }
        long[] into = snapshot.words;
        long taken = 0;
        for (int i = 0; i < words; i++) {
            long w = harvestWord(i);
            if (w != 0) {
                into[i] |= w;
                taken += Long.bitCount(w);
            }
        }
        snapshot.count += taken;
        return taken;
    }

    /** Frames whose bit is set now (a racy count while writers run). */
    public long count() {
        long n = 0;
        for (int i = 0; i < words; i++) {
            n += Long.bitCount(bits.getLongVolatile(i << 3));
        }
        return n;
    }

    private int offset(long gfn) {
        if (gfn < 0 || gfn >= frames) {
            throw new IndexOutOfBoundsException("guest frame 0x" + Long.toHexString(gfn) + " is outside a dirty bitmap of " + frames + " frames");
        }
        return (int) (gfn >>> 6) << 3;
    }
}
