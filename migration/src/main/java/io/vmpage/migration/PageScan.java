package io.vmpage.migration;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.agrona.BufferUtil;
import org.agrona.UnsafeApi;

/**
 * Zero-page detection, as QEMU's {@code buffer_is_zero} runs on every page a migration sends: a zero
 * page travels as a flag. Reads the page eight bytes at a time, four words per step, and stops at the
 * first non-zero word. Stateless and thread-safe.
 */
public final class PageScan {
    /** Bytes of a page. */
    public static final int PAGE = StreamFormat.PAGE_BYTES;
    private static final long BYTES = UnsafeApi.arrayBaseOffset(byte[].class);
    /** Little-endian whatever the machine: a hash must not depend on it. */
    private static final VarHandle LONG_LE = MethodHandles.byteArrayViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);

    private PageScan() {
    }

    /** Whether the 4096 bytes of {@code page} from {@code at} are all zero. */
    public static boolean isZero(byte[] page, int at) {
        java.util.Objects.checkFromIndexSize(at, PAGE, page.length); // once: the loop reads inside it unchecked
        long base = BYTES + at;
        for (int i = 0; i < PAGE; i += 32) {
            if ((UnsafeApi.getLong(page, base + i) | UnsafeApi.getLong(page, base + i + 8) | UnsafeApi.getLong(page, base + i + 16)
                | UnsafeApi.getLong(page, base + i + 24)) != 0) {
                return false;
            }
        }
        return true;
    }

    /** Whether the 4096 bytes of {@code b} from index {@code at} (not its position) are all zero. */
    public static boolean isZero(ByteBuffer b, int at) {
        java.util.Objects.checkFromIndexSize(at, PAGE, b.limit());
        if (b.isDirect()) {
            long base = BufferUtil.address(b) + at;
            for (int i = 0; i < PAGE; i += 32) {
                if ((UnsafeApi.getLong(base + i) | UnsafeApi.getLong(base + i + 8) | UnsafeApi.getLong(base + i + 16)
                    | UnsafeApi.getLong(base + i + 24)) != 0) {
                    return false;
                }
            }
            return true;
        }
        for (int i = at; i < at + PAGE; i += 32) {
            if ((b.getLong(i) | b.getLong(i + 8) | b.getLong(i + 16) | b.getLong(i + 24)) != 0) {
                return false;
            }
        }
        return true;
    }

    /**
     * A 64-bit hash of the 4096 bytes of {@code page} from {@code at}: equal pages hash equal in every
     * process and run. For comparing two copies of a page across a connection (a migration's check of
     * the destination against the paused source), not against an adversary.
     */
    public static long hash(byte[] page, int at) {
        java.util.Objects.checkFromIndexSize(at, PAGE, page.length);
        long h = 0x9E37_79B9_7F4A_7C15L;
        for (int i = at; i < at + PAGE; i += 8) {
            h = Long.rotateLeft(h ^ (long) LONG_LE.get(page, i), 27) * 0xC2B2_AE3D_27D4_EB4FL;
        }
        h ^= h >>> 33;
        h *= 0xFF51_AFD7_ED55_8CCDL;
        return h ^ (h >>> 33);
    }
}
