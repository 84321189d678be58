package io.vmpage.engine.dirty;

import io.vmpage.engine.Internal;
import io.vmpage.mmu.MachineMemory;

/**
 * The write-protect protocol of dirty logging, in one place for every paging mode (the entry formats
 * differ only in which bits grant write access).
 *
 * <p>A write fault on a protected page <i>first</i> grants write access in the entry (CAS) and <i>then</i>
 * marks the page; a harvest <i>first</i> takes the bitmap word and <i>then</i> revokes write access of
 * the pages it took (CAS), then flushes TLBs. Whatever the interleaving, an entry left writable has its
 * bit set (or is in the harvest about to revoke it): granting after the revoke is followed by a mark
 * after the harvest's take, and a grant before the revoke is undone by it. The opposite order on the
 * fault side (mark, then grant) can lose a page: mark, harvest takes and revokes, grant, and the page
 * stays writable with a clear bit. Both entry updates are CAS so that hardware A/D updates and other
 * engine edits are never overwritten.
 *
 * <p>The fault side is this class's {@link #grant}, which every entry format's change function calls
 * when a change gains write access; the harvest side is each format's revoke, through the same change
 * function ({@code EptLeaf.clearBits}, {@code ShadowLeaf.writeProtect}, {@code PvL1Entry.writeProtect}).
 * The jcstress tests in the {@code stress} module race those production functions against each other
 * and against the mmu's own walker setting A/D.
 */
@Internal
public final class WriteProtection {
    private WriteProtection() {
    }

    /**
     * The fault side, as every paging mode runs it: replaces the entry at host-physical {@code entry} by
     * {@code granted} if it still holds {@code expected}, then logs guest frame {@code gfn} in
     * {@code log} (vCPU {@code vcpu}'s dirty ring, or the bitmap for -1; nothing while the log is off,
     * or for a negative {@code gfn}). False, nothing logged, when the entry changed (the caller re-reads or lets
     * the access fault again).
     */
    public static boolean grant(MachineMemory memory, long entry, long expected, long granted, DirtyLog.Writer log, int vcpu, long gfn) {
        if (!memory.compareAndSetLong(entry, expected, granted)) {
            return false;
        }
        if (gfn >= 0) {
            log.afterGrant(vcpu, gfn);
        }
        return true;
    }
}
