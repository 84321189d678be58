package io.vmpage.stress;

import static org.openjdk.jcstress.annotations.Expect.ACCEPTABLE;
import static org.openjdk.jcstress.annotations.Expect.FORBIDDEN;

import io.vmpage.engine.WriteProtection;
import org.openjdk.jcstress.annotations.Actor;
import org.openjdk.jcstress.annotations.Arbiter;
import org.openjdk.jcstress.annotations.JCStressTest;
import org.openjdk.jcstress.annotations.Outcome;
import org.openjdk.jcstress.annotations.State;
import org.openjdk.jcstress.infra.results.ZZZ_Result;

/**
 * The write-protect protocol of {@link WriteProtection}: a write fault on a write-protected page
 * ({@code grant}: CAS the entry read-only to writable, then mark the frame) racing with a dirty-log
 * harvest ({@code harvestWord}, then {@code revoke} write access if the frame was taken). The entry is
 * one 8-byte page-table entry in machine memory, present ({@link #P}) and read-only ({@link #W} clear),
 * its frame clean. Results: (entry writable at the end, frame's bit set at the end, harvest reported it).
 *
 * <p>Forbidden: the entry ends writable with the bit clear. The guest then writes the page without
 * faulting and nothing records it, so the next harvest misses the page and a migration sends stale
 * contents. Grant-then-mark rules it out: the harvest can take the bit only after the mark, hence after
 * the grant, so its revoke finds the entry writable and protects it again; a harvest that finds the bit
 * clear leaves it to be set by the mark still to come.
 */
@JCStressTest
@Outcome(id = "true, true, false", expect = ACCEPTABLE,
    desc = "harvest took the word before the mark: entry writable, bit set for the next harvest")
@Outcome(id = "false, false, true", expect = ACCEPTABLE,
    desc = "grant and mark before the harvest took the word: reported and write-protected again")
@Outcome(id = "true, false, .*", expect = FORBIDDEN,
    desc = "LOST PAGE: entry writable, bit clear: later writes are never logged")
@Outcome(expect = FORBIDDEN,
    desc = "impossible with one grant and one mark: the grant or the mark vanished, or the bit was set after its harvest and revoke")
@State
public class WriteProtectStress {
    /** Present bit of the entry. */
    static final long P = 1L;
    /** Writable bit of the entry. */
    static final long W = 1L << 1;
    /** A present, read-only entry mapping some host frame. */
    static final long READ_ONLY = 0x7_5000L | P;

    private final int slot = Slots.take();
    private final long entry = Slots.hostEntry(slot);
    private final long gfn = Slots.logFrame(slot, 9);

    public WriteProtectStress() {
        MEMORY.putLongVolatile(entry, READ_ONLY);
    }

    static final io.vmpage.mmu.MachineMemory MEMORY = Slots.HOST.memory();

    /** The engine's fault side, as every paging mode calls it (the log marks the bitmap: no vCPU ring). */
    @Actor
    public void fault() {
        WriteProtection.grant(MEMORY, entry, READ_ONLY, READ_ONLY | W, Slots.LOG, null, gfn);
    }

    @Actor
    public void harvest(ZZZ_Result r) {
        r.r3 = harvestAndRevoke(slot, entry, gfn);
    }

    @Arbiter
    public void outcome(ZZZ_Result r) {
        r.r1 = (MEMORY.getLongVolatile(entry) & W) != 0;
        r.r2 = Slots.LOG.bitmap().isDirty(gfn);
    }

    /**
     * The harvest side, in the order {@code DirtyLog.harvest} runs it: take the bitmap word
     * ({@code DirtyBitmap.harvest} takes every word with {@code harvestWord}), then write-protect the frame
     * if it was taken ({@code writeProtect} of each backend revokes with {@link WriteProtection#revoke}).
     */
    static boolean harvestAndRevoke(int slot, long entry, long gfn) {
        long taken = Slots.LOG.bitmap().harvestWord(Slots.logWord(slot));
        boolean reported = (taken & (1L << (gfn & 63))) != 0;
        if (reported) {
            WriteProtection.revoke(MEMORY, entry, P, W, 0);
        }
        return reported;
    }
}
