package io.vmpage.stress;

import io.vmpage.engine.DirtyBitmap;
import io.vmpage.engine.DirtyLog;
import io.vmpage.engine.DirtyTracking;
import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.VmConfig;
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
 *
 * <p>The write-protect tests run the engine's own fault side ({@code WriteProtection.grant} logging into
 * a real {@link DirtyLog}), so they take their entries and bits from {@link #HOST} and {@link #LOG}: a
 * host whose machine memory holds the entries (nothing is ever populated there) and one VM logging by
 * write protection, with one bitmap word per slot ({@link #logWord}; a VM covering one padded word per
 * slot would need a 256 MiB physical-to-machine map per fork).
 */
final class Slots {
    /** Slots per fork: 4 MiB of machine memory, 4 MiB of bitmap. */
    static final int COUNT = 1 << 16;
    private static final int LINE = 64;

    static final MachineMemory MEMORY = MachineMemory.allocate((long) COUNT * LINE);
    static final DirtyBitmap BITMAP = new DirtyBitmap((long) COUNT * LINE * Byte.SIZE);

    /**
     * Machine memory for the write-protect tests' entries, slot {@code s} at {@link #hostEntry}: the upper
     * half, above the few frames the host hands out from the bottom (the VM's EPT root).
     */
    static final Host HOST = Host.create(2L * COUNT * LINE);
    /** A VM's dirty log, on with write protection: guest frames {@code 64s .. 64s+63} belong to slot {@code s}. */
    static final DirtyLog LOG = logOn();

    private static final AtomicInteger NEXT = new AtomicInteger();

    private static DirtyLog logOn() {
        DirtyLog log = HOST.createVm(VmConfig.of((long) COUNT * Long.SIZE << MachineMemory.FRAME_SHIFT)
            .withPaging(PagingMode.NESTED)).dirtyLog();
        log.enable(DirtyTracking.WRITE_PROTECT);
        return log;
    }

    private Slots() {
    }

    /** The next slot, with its bitmap words cleared. */
    static int take() {
        int slot = NEXT.getAndIncrement() & (COUNT - 1);
        BITMAP.harvestWord(word(slot));
        LOG.bitmap().harvestWord(logWord(slot));
        return slot;
    }

    /** Physical address of the slot's entry in {@link #HOST}'s machine memory. */
    static long hostEntry(int slot) {
        return (long) COUNT * LINE + (long) slot * LINE;
    }

    /** Index of the slot's word in {@link #LOG}'s bitmap. */
    static int logWord(int slot) {
        return slot;
    }

    /** Guest frame number of bit {@code bit} (0..63) of the slot's word in {@link #LOG}'s bitmap. */
    static long logFrame(int slot, int bit) {
        return ((long) logWord(slot) << 6) + bit;
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
