package io.vmpage.engine.memory;

import io.vmpage.mmu.MachineMemory;
import java.nio.ByteBuffer;
import org.agrona.concurrent.UnsafeBuffer;

/**
 * The host's machine frames: an O(1), lock-free allocator and one 64-bit descriptor per frame, off-heap,
 * with no per-frame objects (Xen's {@code page_info}, Linux's {@code struct page}, shrunk to a word).
 *
 * <p>Each frame's descriptor is one word in the layout of {@link FrameDescriptor}. This class is the
 * read-only view an embedder gets ({@code Host.frames()}); the engine allocates, frees and changes
 * descriptors through the {@link FrameAllocator} that owns the table.
 *
 * <p><b>Free list.</b> A Treiber stack threaded through an off-heap {@code next} array, with a 32-bit
 * version tag in the head word so a frame popped and pushed back between another thread's read and CAS
 * cannot corrupt the list (ABA). Pop and push are one CAS each when uncontended.
 *
 * <p><b>Memory ordering.</b> {@code head} is read with a volatile load and changed only by CAS, which
 * orders the {@code next[frame]} store of a push before the frame becomes visible to a popper.
 * Descriptors are written with CAS or volatile stores by the thread that owns the frame at that moment
 * (the allocator between pop and return, then the owning VM), and read with volatile loads.
 */
public final class FrameTable {
    private static final int HEAD_OFFSET = 0;
    private static final long EMPTY = 0;

    private final MachineMemory memory;
    private final long frames;
    private final UnsafeBuffer descriptors;
    private final UnsafeBuffer next;
    /**
     * Machine-to-physical map (Xen's M2P): the guest frame number + 1 a data frame backs, 0 when none.
     * Written by the allocating VM when it installs the frame, before the frame is reachable by the guest;
     * read with volatile loads.
     */
    private final UnsafeBuffer m2p;
    /** head word: bits 63..32 version tag, bits 31..0 frame + 1 (0 = empty). Padded against false sharing. */
    private final UnsafeBuffer head;
    /**
     * Frames on the free list, changed by every pop and push right after its CAS (so a reader may see it
     * off by the operations in flight, never drifting): what the reclaimer polls every millisecond, in O(1).
     */
    private final java.util.concurrent.atomic.AtomicLong free = new java.util.concurrent.atomic.AtomicLong();

    /** @param reserved frames at the bottom kept out of the pool (the host's own use) */
    FrameTable(MachineMemory memory, long reserved) {
        this.memory = memory;
        this.frames = memory.frames();
        if (frames > (Integer.MAX_VALUE >> 3)) {
            throw new IllegalArgumentException("machine memory of " + frames + " frames exceeds the frame table's 2^28 frames (1 TiB)");
        }
        if (reserved < 0 || reserved > frames) {
            throw new IllegalArgumentException("reserved frames " + reserved + " must be between 0 and " + frames);
        }
        this.descriptors = new UnsafeBuffer(ByteBuffer.allocateDirect((int) Math.multiplyExact(frames, 8L)));
        this.next = new UnsafeBuffer(ByteBuffer.allocateDirect((int) Math.multiplyExact(frames, 4L)));
        this.m2p = new UnsafeBuffer(ByteBuffer.allocateDirect((int) Math.multiplyExact(frames, 4L)));
        this.head = new UnsafeBuffer(ByteBuffer.allocateDirect(128));
        // Push high frames first so low frames come out first (deterministic, and tests read easily).
        long top = EMPTY;
        for (long f = frames - 1; f >= reserved; f--) {
            next.putInt((int) f * 4, (int) (top & 0xFFFF_FFFFL) - 1);
            descriptors.putLong((int) f * 8, FrameDescriptor.FREE);
            top = f + 1;
        }
        head.putLongVolatile(HEAD_OFFSET + 64, top);
        free.set(frames - reserved);
    }

    public MachineMemory memory() {
        return memory;
    }

    public long frames() {
        return frames;
    }

    /**
     * Takes a free frame, zero-filled, owned by {@code owner} with one reference and type {@code type};
     * -1 when none is left.
     */
    long allocate(int owner, int type) {
        return take(owner, type, true);
    }

    /**
     * As {@link #allocate}, without the zero fill: for a caller that overwrites all 4096 bytes before
     * anyone but itself can reach the frame (a whole page placed with its contents, as Linux's
     * {@code UFFDIO_COPY} places one), so that the frame is written once, not zeroed and then written.
     */
    long allocateForFill(int owner, int type) {
        return take(owner, type, false);
    }

    /** One free frame for {@code owner}, zero-filled first with {@code zero} if it was ever used; -1 when none. */
    private long take(int owner, int type, boolean zero) {
        long frame = pop();
        if (frame < 0) {
            return -1;
        }
        int at = (int) frame * 8;
        if (zero && (descriptors.getLongVolatile(at) & FrameDescriptor.USED) != 0) {
            memory.zeroFrame(frame); // never hand one VM another's data
        }
        descriptors.putLongVolatile(at, FrameDescriptor.inUse(type, owner, 1));
        return frame;
    }

    /**
     * As {@link #allocateForFill} for up to {@code n} frames at once, into {@code frames[0..)}: one CAS takes
     * a run of the free list's top (a batch of pages placed together pays one atomic, not one each). The
     * descriptors are release stores: the frames become reachable only by a later CAS of whoever installs
     * them. Returns how many it took (fewer when the host has fewer free).
     */
    int allocateForFill(int owner, int type, long[] frames, int n) {
        if (n <= 0) {
            return 0;
        }
        while (true) {
            long h = head.getLongVolatile(HEAD_OFFSET + 64);
            int top = (int) (h & 0xFFFF_FFFFL) - 1;
            int taken = 0;
            for (int f = top; f >= 0 && taken < n; f = next.getIntVolatile(f * 4)) {
                frames[taken++] = f; // read ahead of the CAS: a stale run fails it (the tag moved) and is read again
            }
            int below = taken == 0 ? -1 : next.getIntVolatile((int) frames[taken - 1] * 4);
            long tag = (h >>> 32) + 1;
            if (taken == 0) {
                return 0;
            }
            if (head.compareAndSetLong(HEAD_OFFSET + 64, h, (tag << 32) | ((below + 1) & 0xFFFF_FFFFL))) {
                free.addAndGet(-taken);
                long inUse = FrameDescriptor.inUse(type, owner, 1);
                for (int i = 0; i < taken; i++) {
                    descriptors.putLongRelease((int) frames[i] * 8, inUse);
                }
                return taken;
            }
        }
    }

    /** Returns {@code frame} to the pool. The caller must have removed every mapping of it. */
    void free(long frame) {
        checkFrame(frame);
        int at = (int) frame * 8;
        long d = descriptors.getLongVolatile(at);
        if ((d & FrameDescriptor.FREE) != 0) {
            throw new IllegalStateException("machine frame " + frame + " freed twice");
        }
        descriptors.putLongVolatile(at, FrameDescriptor.USED | FrameDescriptor.FREE);
        m2p.putIntVolatile((int) frame * 4, 0);
        push(frame);
    }

    /**
     * As {@link #free} for {@code frames[0..n)}, with one CAS for them all (a VM torn down gives back its
     * frames by the hundred): the list ends as if they were freed one by one in that order, the last on top.
     * Every frame is checked before any is freed. Descriptors and M2P entries are release stores, published
     * by that CAS before any frame can be popped again.
     */
    void free(long[] frames, int n) {
        if (n <= 0) {
            return;
        }
        for (int i = 0; i < n; i++) {
            checkFrame(frames[i]);
            if ((descriptors.getLongVolatile((int) frames[i] * 8) & FrameDescriptor.FREE) != 0) {
                throw new IllegalStateException("machine frame " + frames[i] + " freed twice");
            }
        }
        for (int i = 0; i < n; i++) {
            int f = (int) frames[i];
            descriptors.putLongRelease(f * 8, FrameDescriptor.USED | FrameDescriptor.FREE);
            m2p.putIntRelease(f * 4, 0);
            if (i > 0) {
                next.putIntRelease(f * 4, (int) frames[i - 1]); // each on top of the one freed before it
            }
        }
        int bottom = (int) frames[0];
        while (true) {
            long h = head.getLongVolatile(HEAD_OFFSET + 64);
            next.putIntVolatile(bottom * 4, (int) (h & 0xFFFF_FFFFL) - 1);
            long tag = (h >>> 32) + 1;
            if (head.compareAndSetLong(HEAD_OFFSET + 64, h, (tag << 32) | (frames[n - 1] + 1))) {
                free.addAndGet(n);
                return;
            }
        }
    }

    /** The guest frame that machine frame {@code frame} backs for its owner VM, or -1 when none (Xen's M2P). */
    public long guestFrame(long frame) {
        checkFrame(frame);
        return (m2p.getIntVolatile((int) frame * 4) & 0xFFFF_FFFFL) - 1;
    }

    /**
     * Records that {@code frame} backs guest frame {@code gfn} of its owner: a release store, since the
     * frame becomes reachable only by the p2m CAS that installs it afterwards, which publishes this too.
     */
    void setGuestFrame(long frame, long gfn) {
        m2p.putIntRelease((int) frame * 4, (int) (gfn + 1));
    }

    /** The descriptor of {@code frame} (volatile read). */
    public long descriptor(long frame) {
        checkFrame(frame);
        return descriptors.getLongVolatile((int) frame * 8);
    }

    /** Replaces the descriptor of {@code frame} if it still equals {@code expected}. */
    boolean compareAndSetDescriptor(long frame, long expected, long update) {
        checkFrame(frame);
        return descriptors.compareAndSetLong((int) frame * 8, expected, update);
    }

    /** Free frames right now (exact when no allocation or free is in flight). */
    public long freeFrames() {
        return free.get();
    }

    private void checkFrame(long frame) {
        if (frame < 0 || frame >= frames) {
            throw new IllegalArgumentException("machine frame " + frame + " is outside the host's " + frames + " frames");
        }
    }

    private long pop() {
        while (true) {
            long h = head.getLongVolatile(HEAD_OFFSET + 64);
            int top = (int) (h & 0xFFFF_FFFFL) - 1;
            if (top < 0) {
                return -1;
            }
            int below = next.getIntVolatile(top * 4);
            long tag = (h >>> 32) + 1;
            if (head.compareAndSetLong(HEAD_OFFSET + 64, h, (tag << 32) | ((below + 1) & 0xFFFF_FFFFL))) {
                free.decrementAndGet();
                return top;
            }
        }
    }

    private void push(long frame) {
        while (true) {
            long h = head.getLongVolatile(HEAD_OFFSET + 64);
            next.putIntVolatile((int) frame * 4, (int) (h & 0xFFFF_FFFFL) - 1);
            long tag = (h >>> 32) + 1;
            if (head.compareAndSetLong(HEAD_OFFSET + 64, h, (tag << 32) | (frame + 1))) {
                free.incrementAndGet();
                return;
            }
        }
    }
}
