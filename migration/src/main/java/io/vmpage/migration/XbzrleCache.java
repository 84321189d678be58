package io.vmpage.migration;

import java.util.Arrays;

/**
 * The source's copies of pages it sent, for XBZRLE: direct-mapped by guest frame number as QEMU's page
 * cache is (slot = gfn mod slots, a newer page evicts the older one). Bounded: {@code bytes / 4096}
 * slots. The destination needs no cache: the page it holds is the one the delta was taken against.
 * Source thread only.
 */
final class XbzrleCache {
    private final long[] tags;
    /** The slots' pages, back to back. */
    final byte[] pages;

    XbzrleCache(long bytes) {
        if (bytes < Xbzrle.PAGE || bytes > 1L << 30) {
            throw new IllegalArgumentException("an XBZRLE cache of " + bytes + " bytes: 4 KiB to 1 GiB");
        }
        int slots = (int) (bytes / Xbzrle.PAGE);
        tags = new long[slots];
        Arrays.fill(tags, -1);
        pages = new byte[slots * Xbzrle.PAGE];
    }

    /** Where {@code gfn}'s cached page starts in {@link #pages}, or -1 when it is not cached. */
    int lookup(long gfn) {
        int slot = slot(gfn);
        return tags[slot] == gfn ? slot * Xbzrle.PAGE : -1;
    }

    /** Caches {@code page} as what the destination now holds for {@code gfn}, evicting the slot's page. */
    void put(long gfn, byte[] page) {
        int slot = slot(gfn);
        tags[slot] = gfn;
        System.arraycopy(page, 0, pages, slot * Xbzrle.PAGE, Xbzrle.PAGE);
    }

    /**
     * {@code gfn} was sent as a zero page: it is cached as zeros (QEMU's {@code xbzrle_cache_zero_page}:
     * a stale copy must go, and a small write into the zero page later travels as a delta).
     */
    void zero(long gfn) {
        int slot = slot(gfn);
        tags[slot] = gfn;
        Arrays.fill(pages, slot * Xbzrle.PAGE, (slot + 1) * Xbzrle.PAGE, (byte) 0);
    }

    private int slot(long gfn) {
        return (int) Long.remainderUnsigned(gfn, tags.length);
    }
}
