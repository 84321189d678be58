package io.vmpage.engine.paging.shadow;

import io.vmpage.engine.Internal;
import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.paging.X86Leaf;
import io.vmpage.engine.dirty.WriteProtection;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Pte;

/**
 * A 4 KiB shadow leaf (an x86-64 PTE the hardware walks, mapping a guest-virtual page straight to a
 * machine frame) and {@link #change}, the one function through which every shadow leaf changes.
 *
 * <pre>
 *  shadow leaf  63  62..52  51..12  11..9  8  7  6  5  4   3   2  1  0
 *              +---+-------+-------+-----+--+--+--+--+---+---+--+--+--+
 *              |NX | 0     |  MFN  |  0  |G |0 |D |A |PCD|PWT|US|RW|P |
 *              +---+-------+-------+-----+--+--+--+--+---+---+--+--+--+
 *  RW only when the guest entry is writable and dirty, the frame holds no shadowed guest table, and
 *  dirty logging is off or the access was a write; D set together with RW (the guest's D is set first).
 *  No software bits: what the engine needs to know about a leaf is in the reverse map.
 * </pre>
 */
@Internal
public final class ShadowLeaf {
    /** {@link #change} result: the entry no longer held the old value; nothing changed. */
    public static final int RACED = X86Leaf.RACED;
    /** {@link #change} result: done; no cached translation lost anything. */
    public static final int DONE = X86Leaf.DONE;
    /** {@link #change} result: done, and a translation vCPUs may cache lost its frame or a permission. */
    public static final int FLUSH = X86Leaf.FLUSH;

    private ShadowLeaf() {
    }

    public static boolean present(long leaf) {
        return X86Leaf.present(leaf);
    }

    public static boolean writable(long leaf) {
        return X86Leaf.writable(leaf);
    }

    /** The machine frame of a present leaf. */
    public static long frame(long leaf) {
        return X86Leaf.frame(leaf);
    }

    /**
     * Changes the leaf at host-physical {@code at}, which maps guest frame {@code gfn}, from {@code old}
     * to {@code updated} by CAS (the hardware sets A/D in it by CAS while vCPUs walk), then derives the
     * side effects: write access gained logs the write after the CAS ({@link WriteProtection#grant};
     * vCPU {@code vcpu}'s ring or the bitmap for -1); a frame or permission dropped from a present leaf
     * returns {@link #FLUSH}. The reverse map is kept by the caller, under the mmu lock.
     */
    public static int change(MachineMemory memory, long at, long old, long updated, DirtyLog.Writer log, int vcpu, long gfn) {
        return X86Leaf.change(memory, at, old, updated, log, vcpu, gfn);
    }

    /**
     * The write protection of a shadow page's guest frame and of dirty logging's harvest: if the leaf at
     * {@code at} is writable and maps machine frame {@code mfn}, clears RW and D through {@link #change},
     * re-reading after each lost race with the hardware's A/D updates. Returns whether it changed the leaf.
     */
    public static boolean writeProtect(MachineMemory memory, long at, long mfn, DirtyLog.Writer log) {
        while (true) {
            long e = memory.getLongVolatile(at);
            if (!writable(e) || frame(e) != mfn) {
                return false;
            }
            if (change(memory, at, e, e & ~(Pte.RW | Pte.D), log, -1, -1) != RACED) {
                return true;
            }
        }
    }
}
