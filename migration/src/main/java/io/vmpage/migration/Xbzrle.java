package io.vmpage.migration;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.agrona.UnsafeApi;

/**
 * XBZRLE, QEMU's delta encoding of a re-sent page against the copy sent before ("Xor Based Zero Run
 * Length Encoding"): the page is cut into alternating runs of unchanged and changed bytes, and only the
 * changed bytes travel.
 *
 * <pre>
 *  delta = ( unchanged u-leb128 | changed u-leb128 | changed bytes )*   the last unchanged run is left out
 *
 *  old   | a a a a a a a a | a a a a a a a a | a a a a a a a a | ...
 *  new   | a a a a a a a a | a a X Y a a a Z | a a a a a a a a | ...
 *  delta   10, 6, "XYaaaZ"        (then nothing: the rest is unchanged)
 * </pre>
 *
 * Runs are found eight bytes at a time: a changed run ends at the first whole aligned word that is
 * unchanged, so a few unchanged bytes between changes travel with them (cheaper than two more run
 * lengths). An empty delta means the page did not change. Stateless; every method is thread-safe.
 */
public final class Xbzrle {
    /** Bytes of a page. */
    public static final int PAGE = StreamFormat.PAGE_BYTES;
    private static final long BYTES = UnsafeApi.arrayBaseOffset(byte[].class);
    /** Byte offsets within a word count from its lowest address: the XOR of two words read little-endian. */
    private static final boolean LITTLE = ByteOrder.nativeOrder() == ByteOrder.LITTLE_ENDIAN;

    private Xbzrle() {
    }

    /**
     * Encodes {@code cur} (4096 bytes at {@code curAt}) as the delta against {@code old} (at {@code oldAt})
     * into {@code out} from index 0.
     *
     * @return the delta's length (0: the page did not change), or -1 when it would not fit in
     *     {@code limit} bytes (the page then goes in full, as QEMU's encoder overflows)
     */
    public static int encode(byte[] old, int oldAt, byte[] cur, int curAt, byte[] out, int limit) {
        java.util.Objects.checkFromIndexSize(oldAt, PAGE, old.length); // once: the scans read inside them unchecked
        java.util.Objects.checkFromIndexSize(curAt, PAGE, cur.length);
        int n = 0;
        int i = 0;
        while (true) {
            int changed = firstChange(old, oldAt, cur, curAt, i);
            if (changed == PAGE) {
                return n;
            }
            int end = changeEnd(old, oldAt, cur, curAt, changed);
            int length = end - changed;
            if (n + uleb128Bytes(changed - i) + uleb128Bytes(length) + length > limit) {
                return -1;
            }
            n = putUleb128(out, n, changed - i);
            n = putUleb128(out, n, length);
            System.arraycopy(cur, curAt + changed, out, n, length);
            n += length;
            i = end;
        }
    }

    /**
     * Applies a delta of {@code length} bytes read from {@code in} to {@code page} (4096 bytes, the
     * previous contents), in place.
     *
     * @throws IllegalArgumentException when the delta is malformed: a run past the page's end, an
     *     empty changed run, a run length that does not end, or bytes left over
     */
    public static void decode(ByteBuffer in, int length, byte[] page) {
        if (length < 0 || length > in.remaining()) {
            throw new IllegalArgumentException("a delta of " + length + " bytes where " + in.remaining() + " are left");
        }
        int end = in.position() + length;
        int at = 0;
        while (in.position() < end) {
            int unchanged = getUleb128(in, end);
            int changed = getUleb128(in, end);
            if (changed == 0) {
                throw new IllegalArgumentException("an empty changed run at page offset " + at);
            }
            if ((long) at + unchanged + changed > PAGE) {
                throw new IllegalArgumentException("runs reach page offset " + ((long) at + unchanged + changed) + ", past its "
                    + PAGE + " bytes");
            }
            if (changed > end - in.position()) {
                throw new IllegalArgumentException("a changed run of " + changed + " bytes where the delta has "
                    + (end - in.position()) + " left");
            }
            at += unchanged;
            in.get(page, at, changed);
            at += changed;
        }
    }

    /** The first offset at or after {@code from} where the two pages differ, or {@link #PAGE}. */
    private static int firstChange(byte[] a, int aAt, byte[] b, int bAt, int from) {
        int i = from;
        for (; (i & 7) != 0; i++) {
            if (a[aAt + i] != b[bAt + i]) {
                return i;
            }
        }
        for (; i < PAGE; i += 8) {
            long x = word(a, aAt + i) ^ word(b, bAt + i);
            if (x != 0) {
                return i + (Long.numberOfTrailingZeros(x) >>> 3);
            }
        }
        return PAGE;
    }

    /** One past the last changed byte before the first unchanged aligned word after {@code changed}. */
    private static int changeEnd(byte[] a, int aAt, byte[] b, int bAt, int changed) {
        int w = changed & ~7;
        long last = 0;
        for (; w < PAGE; w += 8) {
            long x = word(a, aAt + w) ^ word(b, bAt + w);
            if (x == 0) {
                break;
            }
            last = x;
        }
        return w - 8 + ((63 - Long.numberOfLeadingZeros(last)) >>> 3) + 1;
    }

    /** The eight bytes at {@code at}, lowest address in the lowest byte (bounds checked by the caller). */
    private static long word(byte[] a, int at) {
        long w = UnsafeApi.getLong(a, BYTES + at);
        return LITTLE ? w : Long.reverseBytes(w);
    }

    private static int uleb128Bytes(int v) {
        return v < 0x80 ? 1 : v < 0x4000 ? 2 : 3;
    }

    private static int putUleb128(byte[] out, int at, int v) {
        while (v >= 0x80) {
            out[at++] = (byte) (v | 0x80);
            v >>>= 7;
        }
        out[at++] = (byte) v;
        return at;
    }

    /** A run length of at most three bytes (runs are at most a page). */
    private static int getUleb128(ByteBuffer in, int end) {
        int v = 0;
        for (int shift = 0; shift < 21; shift += 7) {
            if (in.position() >= end) {
                throw new IllegalArgumentException("a run length cut off by the end of the delta");
            }
            int b = in.get() & 0xff;
            v |= (b & 0x7f) << shift;
            if ((b & 0x80) == 0) {
                return v;
            }
        }
        throw new IllegalArgumentException("a run length longer than three bytes");
    }
}
