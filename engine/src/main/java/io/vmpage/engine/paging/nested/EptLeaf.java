package io.vmpage.engine.paging.nested;

import io.vmpage.engine.Internal;
import io.vmpage.engine.dirty.DirtyBitmap;
import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.dirty.DirtyTracking;
import io.vmpage.engine.dirty.WriteProtection;
import io.vmpage.engine.memory.BitFields;
import io.vmpage.mmu.Ept;
import io.vmpage.mmu.MachineMemory;

/**
 * A 4 KiB EPT leaf as nested paging uses it: the bits it sets, its software bit, and {@link #change},
 * the one function through which every leaf of a VM's EPT changes.
 *
 * <pre>
 *  EPT leaf   63..57   56..53   52    51..12   11..10  9  8  7  6   5..3  2 1 0
 *            +-------+--------+-----+--------+-------+--+--+--+----+-----+-+-+-+
 *            |       |ignored | COW |  MFN   |       |D |A |PS|IPAT| MT  |X|W|R|
 *            +-------+--------+-----+--------+-------+--+--+--+----+-----+-+-+-+
 *  COW: software bit (EPT bits 56:52 are ignored by the hardware): the leaf maps a shared
 *       copy-on-write frame; W stays clear while it is set.
 * </pre>
 * The class initializer checks that the fields do not overlap ({@link BitFields}).
 */
@Internal
public final class EptLeaf {
    /** Software bit: the leaf maps a shared copy-on-write frame. */
    public static final long COW = 1L << 52;
    /** A private frame, writable (write-back memory). */
    public static final long WRITABLE_FLAGS = Ept.RWX | Ept.MEMORY_TYPE_WB;
    /** A frame mapped read-only: write protected for dirty logging or page sharing. */
    public static final long READ_ONLY_FLAGS = Ept.R | Ept.X | Ept.MEMORY_TYPE_WB;
    /** A shared frame: read-only and {@link #COW}. */
    public static final long SHARED_FLAGS = READ_ONLY_FLAGS | COW;

    /** {@link #change} result: the leaf no longer held the old value; nothing changed. */
    public static final int RACED = -1;
    /** {@link #change} result: done; no cached translation lost anything. */
    public static final int DONE = 0;
    /**
     * {@link #change} result: done, and a translation a vCPU may cache lost its frame, a permission or
     * its D bit: the caller flushes the VM's TLBs before it relies on the change.
     */
    public static final int FLUSH = 1;

    static {
        BitFields.requireDisjoint("EPT leaf", "R", Ept.R, "W", Ept.W, "X", Ept.X, "memory type", Ept.MEMORY_TYPE_MASK,
            "IPAT", Ept.IPAT, "PS", Ept.PS, "A", Ept.A, "D", Ept.D, "address", Ept.ADDRESS_MASK, "COW", COW);
    }

    private EptLeaf() {
    }

    /** A leaf mapping machine frame {@code mfn} with {@code flags}. */
    public static long of(long mfn, long flags) {
        return (mfn << MachineMemory.FRAME_SHIFT) | flags;
    }

    public static boolean present(long leaf) {
        return (leaf & Ept.RWX) != 0;
    }

    public static boolean writable(long leaf) {
        return (leaf & Ept.W) != 0;
    }

    /** The machine frame of a present leaf. */
    public static long frame(long leaf) {
        return (leaf & Ept.ADDRESS_MASK) >>> MachineMemory.FRAME_SHIFT;
    }

    /**
     * Changes the leaf at host-physical {@code at}, mapping guest frame {@code gfn}, from {@code old} to
     * {@code updated} by CAS, and then does what the difference between the two values calls for (KVM's
     * {@code handle_changed_spte}):
     * <ul>
     * <li>write access gained: the write about to happen is logged, after the CAS ({@link WriteProtection#grant}:
     *     grant, then log; vCPU {@code vcpu}'s ring, or the bitmap for -1); not under D-bit logging,
     *     where the hardware sets the new leaf's D bit on that write and the collection reports it;
     * <li>a D bit dropped: the write it recorded is logged ({@link DirtyLog.Writer#markDirtyBit}; under
     *     D-bit logging only), unless {@code resetDirty}: the D bits are being reset as D-bit logging
     *     starts, and what they recorded predates the log;
     * <li>a frame, a permission or a D bit dropped from a present leaf: {@link #FLUSH} (vCPUs may cache it).
     * </ul>
     * Hardware A/D updates race with every change (the walker sets them by CAS too), so a caller that
     * gets {@link #RACED} re-reads the leaf and decides again.
     */
    public static int change(MachineMemory memory, long at, long old, long updated, DirtyLog.Writer log, int vcpu, long gfn,
                             boolean resetDirty) {
        boolean granted = writable(updated) && !(writable(old) && frame(old) == frame(updated));
        if (granted && log.method() != DirtyTracking.DIRTY_BITS) {
            if (!WriteProtection.grant(memory, at, old, updated, log, vcpu, gfn)) {
                return RACED;
            }
        } else if (!memory.compareAndSetLong(at, old, updated)) {
            return RACED;
        }
        if (!present(old)) {
            return DONE;
        }
        boolean dirtyDropped = (old & Ept.D) != 0 && ((updated & Ept.D) == 0 || frame(old) != frame(updated));
        if (dirtyDropped && !resetDirty) {
            log.markDirtyBit(gfn);
        }
        boolean lost = !present(updated) || frame(old) != frame(updated) || (old & Ept.RWX & ~updated) != 0 || dirtyDropped;
        return lost ? FLUSH : DONE;
    }

    /**
     * Clears {@code bits} (W for write protection, D for a D-bit sweep) in the present leaf at {@code at}
     * through {@link #change}, re-reading after each lost race with the hardware's A/D updates. The
     * harvest side of dirty logging runs this for every page it reports; {@code resetDirty} as in
     * {@link #change}. Returns whether the leaf had any of the bits (they are clear now).
     */
    public static boolean clearBits(MachineMemory memory, long at, long bits, DirtyLog.Writer log, long gfn, boolean resetDirty) {
        return clearBits(memory, at, memory.getLongVolatile(at), bits, log, gfn, resetDirty);
    }

    /**
     * {@link #clearBits} of a leaf the caller just read as {@code seen} (a sweep saves the second load).
     * This is {@link #change}'s bit-clear case spelled out for the sweeps' hot loop: clearing bits never
     * grants write access, the frame stays, and what it derives is the mark of a dropped D bit (unless
     * {@code resetDirty}) and a flush, which every caller does after its sweep.
     */
    public static boolean clearBits(MachineMemory memory, long at, long seen, long bits, DirtyLog.Writer log, long gfn,
                                    boolean resetDirty) {
        for (long e = seen; present(e) && (e & bits) != 0; e = memory.getLongVolatile(at)) {
            if (memory.compareAndSetLong(at, e, e & ~bits)) {
                if (!resetDirty && (e & bits & Ept.D) != 0) {
                    log.markDirtyBit(gfn);
                }
                return true;
            }
        }
        return false;
    }

    /**
     * D-bit logging's collection of one leaf: clears its D bit ({@link #clearBits}) and, when it was set,
     * marks guest frame {@code gfn} in {@code into}. A write the hardware completes meanwhile either set D
     * before the clear (collected now) or sets it after (collected next time): never both lost.
     */
    public static void collectDirty(MachineMemory memory, long at, DirtyLog.Writer log, long gfn, DirtyBitmap into) {
        collectDirty(memory, at, memory.getLongVolatile(at), log, gfn, into);
    }

    /** {@link #collectDirty} of a leaf the caller just read as {@code seen}. */
    public static void collectDirty(MachineMemory memory, long at, long seen, DirtyLog.Writer log, long gfn, DirtyBitmap into) {
        if (clearBits(memory, at, seen, Ept.D, log, gfn, true)) {
            into.mark(gfn);
        }
    }
}
