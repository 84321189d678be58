package io.vmpage.engine.memory;

import io.vmpage.engine.Internal;

/**
 * The engine's mutating handle on a VM's {@link GuestPhysicalMap}: every entry change is a CAS from
 * the entry the caller saw, so a racing install, merge, copy-on-write break or discard is noticed.
 */
@Internal
public final class PhysicalMapWriter {
    private final GuestPhysicalMap map;

    /** A map of {@code frames} guest frames, every entry {@link P2mEntry#EMPTY}. */
    public PhysicalMapWriter(long frames) {
        this.map = new GuestPhysicalMap(frames);
    }

    /** The read-only view. */
    public GuestPhysicalMap map() {
        return map;
    }

    /** Installs private frame {@code mfn} for {@code gfn} if the entry is still empty; false if another thread won. */
    public boolean install(long gfn, long mfn) {
        return compareAndSet(gfn, P2mEntry.EMPTY, P2mEntry.privateFrame(mfn));
    }

    /** Replaces entry {@code expected} of {@code gfn} by {@code update}; false when it no longer holds {@code expected}. */
    public boolean compareAndSet(long gfn, long expected, long update) {
        return map.entries.compareAndSetLong((int) gfn * 8, expected, update);
    }

    /**
     * Empties {@code gfn}'s entry if it still maps machine frame {@code mfn} (private or shared); the
     * caller frees or unshares the frame after flushing TLBs.
     */
    public boolean remove(long gfn, long mfn) {
        return remove(gfn, mfn, P2mEntry.EMPTY);
    }

    /** As {@link #remove(long, long)}, leaving {@code replacement} (a non-present entry, e.g. BALLOONED) instead of empty. */
    public boolean remove(long gfn, long mfn, long replacement) {
        if (P2mEntry.isPresent(replacement)) {
            throw new IllegalArgumentException("a removed frame leaves a non-present entry, not " + P2mEntry.describe(replacement));
        }
        while (true) {
            long e = map.entry(gfn);
            if (P2mEntry.frame(e) != mfn) {
                return false;
            }
            if (compareAndSet(gfn, e, replacement)) {
                return true;
            }
        }
    }
}
