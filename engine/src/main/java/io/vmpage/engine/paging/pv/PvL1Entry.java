package io.vmpage.engine.paging.pv;

import io.vmpage.engine.Hypercalls;
import io.vmpage.engine.Internal;
import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.paging.X86Leaf;
import io.vmpage.engine.dirty.WriteProtection;
import io.vmpage.engine.memory.BitFields;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Pte;

/**
 * An L1 entry of a paravirtual guest's own page tables (it maps guest memory: the hardware walks it
 * directly) and {@link #change}, the one function through which the hypervisor changes one.
 *
 * <pre>
 *  L1 entry   63  62..53  52            51..12  11..9  8  7   6  5  4   3   2  1  0
 *            +---+-------+-------------+-------+-----+--+---+--+--+---+---+--+--+--+
 *            |NX | avail |LOG_DIRTY_WP |  MFN  |avail|G |PAT|D |A |PCD|PWT|US|RW|P |
 *            +---+-------+-------------+-------+-----+--+---+--+--+---+---+--+--+--+
 *  LOG_DIRTY_WP ({@link Hypercalls#LOG_DIRTY_WP}, a bit the hardware ignores): the guest made the
 *  entry writable, the hypervisor holds RW back until the first write is logged.
 * </pre>
 * The class initializer checks that the fields do not overlap ({@link BitFields}).
 */
@Internal
public final class PvL1Entry {
    /** The hypervisor's log-dirty bit. */
    public static final long LOG_DIRTY_WP = Hypercalls.LOG_DIRTY_WP;

    /** {@link #change} result: the entry no longer held the old value; nothing changed. */
    public static final int RACED = X86Leaf.RACED;
    /** {@link #change} result: done; no cached translation lost anything. */
    public static final int DONE = X86Leaf.DONE;
    /** {@link #change} result: done, and a translation vCPUs may cache lost its frame or a permission. */
    public static final int FLUSH = X86Leaf.FLUSH;

    static {
        BitFields.requireDisjoint("paravirtual L1 entry", "P", Pte.P, "RW", Pte.RW, "US", Pte.US, "PWT", Pte.PWT,
            "PCD", Pte.PCD, "A", Pte.A, "D", Pte.D, "PAT", Pte.PS, "G", Pte.G, "address", Pte.ADDRESS_MASK,
            "LOG_DIRTY_WP", LOG_DIRTY_WP, "NX", Pte.NX);
    }

    private PvL1Entry() {
    }

    public static boolean present(long entry) {
        return X86Leaf.present(entry);
    }

    /** Writable by the hardware now. */
    public static boolean writable(long entry) {
        return X86Leaf.writable(entry);
    }

    /** The machine frame of a present entry. */
    public static long frame(long entry) {
        return X86Leaf.frame(entry);
    }

    /** {@code entry} made writable by the guest, with RW held back for the log. */
    public static long writeProtected(long entry) {
        return (entry & ~Pte.RW) | LOG_DIRTY_WP;
    }

    /** {@code entry} with RW given back after its first write. */
    public static long granted(long entry) {
        return (entry & ~LOG_DIRTY_WP) | Pte.RW;
    }

    /**
     * Changes the L1 entry at machine address {@code at} from {@code old} to {@code updated} by CAS (the
     * hardware sets A/D in it by CAS while vCPUs walk), then derives the side effects: write access
     * gained by the hardware for the same frame logs guest frame {@code gfn} after the CAS
     * ({@link WriteProtection#grant}; vCPU {@code vcpu}'s ring, or the bitmap for -1; nothing for a
     * negative {@code gfn}); a frame or permission dropped from a present entry returns {@link #FLUSH}.
     * Page-type references stay with the caller: the new value's are taken before the store (validation),
     * the old value's dropped after the flush.
     */
    public static int change(MachineMemory memory, long at, long old, long updated, DirtyLog.Writer log, int vcpu, long gfn) {
        return X86Leaf.change(memory, at, old, updated, log, vcpu, gfn);
    }

    /**
     * The harvest side of log-dirty write protection: if the entry at {@code at} is writable, holds RW
     * back ({@link #writeProtected}) through {@link #change}, re-reading after each lost race with the
     * hardware's A/D updates. Returns whether it protected the entry.
     */
    public static boolean writeProtect(MachineMemory memory, long at, DirtyLog.Writer log) {
        while (true) {
            long e = memory.getLongVolatile(at);
            if (!writable(e)) {
                return false;
            }
            if (change(memory, at, e, writeProtected(e), log, -1, -1) != RACED) {
                return true;
            }
        }
    }
}
