package io.vmpage.engine.paging;

import io.vmpage.engine.Internal;
import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.dirty.WriteProtection;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Pte;

/**
 * The change function of a 4 KiB x86-64 PTE that maps guest memory and that the hardware walks 1D: the
 * common part of a shadow leaf ({@code ShadowLeaf}) and a paravirtual guest's L1 entry
 * ({@code PvL1Entry}), which differ in their software bits and callers, not in what a change implies.
 */
@Internal
public final class X86Leaf {
    /** {@link #change} result: the entry no longer held the old value; nothing changed. */
    public static final int RACED = -1;
    /** {@link #change} result: done; no cached translation lost anything. */
    public static final int DONE = 0;
    /** {@link #change} result: done, and a translation vCPUs may cache lost its frame or a permission. */
    public static final int FLUSH = 1;

    private X86Leaf() {
    }

    public static boolean present(long entry) {
        return (entry & Pte.P) != 0;
    }

    /** Writable by the hardware now. */
    public static boolean writable(long entry) {
        return (entry & (Pte.P | Pte.RW)) == (Pte.P | Pte.RW);
    }

    /** The machine frame of a present entry. */
    public static long frame(long entry) {
        return (entry & Pte.ADDRESS_MASK) >>> MachineMemory.FRAME_SHIFT;
    }

    /**
     * Changes the entry at host-physical {@code at}, which maps guest frame {@code gfn}, from {@code old}
     * to {@code updated} by CAS (the hardware sets A/D in it by CAS while vCPUs walk), then derives the
     * side effects: write access gained by the hardware for the same frame logs the write after the CAS
     * ({@link WriteProtection#grant}; vCPU {@code vcpu}'s ring or the bitmap for -1; nothing for a
     * negative {@code gfn}); a frame or permission dropped from a present entry returns {@link #FLUSH}.
     */
    public static int change(MachineMemory memory, long at, long old, long updated, DirtyLog.Writer log, int vcpu, long gfn) {
        boolean granted = writable(updated) && !(writable(old) && frame(old) == frame(updated));
        if (granted) {
            if (!WriteProtection.grant(memory, at, old, updated, log, vcpu, gfn)) {
                return RACED;
            }
        } else if (!memory.compareAndSetLong(at, old, updated)) {
            return RACED;
        }
        if (!present(old)) {
            return DONE;
        }
        long permissions = Pte.P | Pte.RW | Pte.US;
        boolean lost = !present(updated) || frame(old) != frame(updated) || (old & permissions & ~updated) != 0
            || (updated & Pte.NX & ~old) != 0;
        return lost ? FLUSH : DONE;
    }
}
