package io.vmpage.stress;

import io.vmpage.engine.DirtyBitmap;
import io.vmpage.mmu.MachineMemory;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Per-state storage for the jcstress tests, carved out of one machine memory and one dirty bitmap
 * shared by every state of a fork.
 *
 * <p>jcstress creates a fresh state object for every trial (hundreds of thousands per second), far too
 * many for one {@code mmap} (and one direct buffer for a bitmap) each, and nothing tells a state when its
 * trial is over so it could be freed. Instead each state takes the next of {@link #COUNT} slots, round
 * robin: slot {@code s} owns the 8-byte entry at physical address {@code 64s} of {@link #MEMORY} and word
 * {@code 8s} of {@link #BITMAP} (frames {@code 512s .. 512s+63}); slots are a cache line apart so that
 * neighbouring states do not share a line. A slot is reused only after {@code COUNT} further states were
 * created, long after its trial has ended: jcstress keeps at most one epoch of {@code -strideCount} x
 * {@code -strideSize} states live (40 x 256 = 10,240 in the quick and default presets), so raise
 * {@link #COUNT} before raising those past it.
 * The constructor of each test resets its slot. Both regions live until the fork exits.
 */
final class Slots {
    /** Slots per fork: 4 MiB of machine memory, 4 MiB of bitmap. */
    static final int COUNT = 1 << 16;
    private static final int LINE = 64;

    static final MachineMemory MEMORY = MachineMemory.allocate((long) COUNT * LINE);
    static final DirtyBitmap BITMAP = new DirtyBitmap((long) COUNT * LINE * Byte.SIZE);

    private static final AtomicInteger NEXT = new AtomicInteger();

    private Slots() {
    }

    /** The next slot, with its bitmap word cleared. */
    static int take() {
        int slot = NEXT.getAndIncrement() & (COUNT - 1);
        BITMAP.harvestWord(word(slot));
        return slot;
    }

    /** Physical address of the slot's entry in {@link #MEMORY}. */
    static long entry(int slot) {
        return (long) slot * LINE;
    }

    /** Index of the slot's word in {@link #BITMAP}. */
    static int word(int slot) {
        return slot * (LINE / Long.BYTES);
    }

    /** Guest frame number of bit {@code bit} (0..63) of the slot's word. */
    static long frame(int slot, int bit) {
        return ((long) word(slot) << 6) + bit;
    }
}
