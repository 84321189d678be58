package io.vmpage.mmu;

import org.agrona.UnsafeApi;

/**
 * Off-heap memory standing in for a host's RAM, addressed by 64-bit physical address.
 *
 * <pre>
 *  physical address (bytes)
 *   63                                  12 11          0
 *  +--------------------------------------+-------------+
 *  |        machine frame number (MFN)     | frame offset|
 *  +--------------------------------------+-------------+
 *  frames are 4 KiB; memory size is a whole number of frames, from one frame up to
 *  whatever the host can allocate (one contiguous region, so beyond Agrona's 2 GiB buffers).
 * </pre>
 *
 * <p>Memory is zero-filled on allocation, page-aligned, and freed explicitly by {@link #close()}. On
 * Linux it is populated lazily ({@link NativeRegion}): a large memory costs host RAM only for the
 * frames that are touched.
 *
 * <p><b>Checked and unchecked access.</b> Every public accessor without the {@code Unchecked} suffix
 * validates the address (range and natural alignment) and throws {@link IllegalArgumentException} naming
 * the address and the memory size, or {@link IllegalStateException} after close. Hot paths that have
 * already validated an address at their own boundary (a walker that bounds-checked the table base, an
 * engine that owns the frame) use the {@code Unchecked} accessors, which compile to a single load or
 * store. An unchecked access outside memory is undefined behaviour: callers must validate first.
 *
 * <p><b>Memory ordering.</b> Plain accessors have no ordering. {@code getLongAcquire} pairs with
 * {@code putLongRelease} (and with any CAS) on the same address; {@code *Volatile} are sequentially
 * consistent. CAS and get-and-add are full fences, like x86 {@code LOCK CMPXCHG} / {@code LOCK XADD}.
 *
 * <p><b>Closing.</b> {@code close()} must not race with accesses by other threads (as with any native
 * resource); once it has returned, checked accessors throw {@link IllegalStateException}.
 */
public final class MachineMemory implements AutoCloseable {
    public static final int FRAME_SHIFT = 12;
    public static final int FRAME_SIZE = 1 << FRAME_SHIFT;
    public static final long FRAME_OFFSET_MASK = FRAME_SIZE - 1;

    private final long size;
    private final NativeRegion region;
    private final long base;
    /**
     * Highest valid byte address + 1 while open, 0 after close: one compare serves both the bounds
     * check and the use-after-close check. Written once by {@link #close()}; volatile so a thread that
     * accesses after close (in happens-before order) sees it.
     */
    private volatile long limit;

    private MachineMemory(long size) {
        this.size = size;
        this.region = NativeRegion.allocate(size);
        this.base = region.address();
        this.limit = size;
    }

    /**
     * Allocates zero-filled machine memory of {@code bytes}, a positive multiple of {@link #FRAME_SIZE}.
     *
     * @throws IllegalArgumentException when the size is not a positive whole number of frames
     * @throws NativeMemoryException when the host cannot supply it (the message names the size and the
     *         operating system's error)
     */
    public static MachineMemory allocate(long bytes) {
        if (bytes <= 0 || (bytes & FRAME_OFFSET_MASK) != 0) {
            throw new IllegalArgumentException("machine memory size " + bytes
                + " must be a positive multiple of the 4096-byte frame size");
        }
        return new MachineMemory(bytes);
    }

    /** Size in bytes. */
    public long size() {
        return size;
    }

    /** Number of 4 KiB frames. */
    public long frames() {
        return size >>> FRAME_SHIFT;
    }

    /** True until {@link #close()}. */
    public boolean isOpen() {
        return limit != 0;
    }

    /** True when the physical address range [pa, pa+length) lies inside this memory. */
    public boolean contains(long pa, long length) {
        return pa >= 0 && length >= 0 && pa <= size - length;
    }

    // ------------------------------------------------------------------ validation

    private long check(long pa, int width) {
        long lim = limit;
        if (pa < 0 || pa > lim - width || (pa & (width - 1)) != 0) {
            throw badAddress(pa, width, lim);
        }
        return base + pa;
    }

    private RuntimeException badAddress(long pa, long width, long lim) {
        if (lim == 0) {
            return new IllegalStateException("machine memory is closed (access to physical address "
                + hex(pa) + ")");
        }
        if (pa >= 0 && pa <= lim - width) {
            return new IllegalArgumentException("physical address " + hex(pa) + " is not " + width
                + "-byte aligned");
        }
        return new IllegalArgumentException("physical address " + hex(pa) + " (" + width
            + "-byte access) is outside machine memory of " + hex(size) + " bytes");
    }

    private long checkRange(long pa, long length) {
        long lim = limit;
        if (length < 0 || pa < 0 || pa > lim - length) {
            throw badAddress(pa, length, lim);
        }
        return base + pa;
    }

    private long checkFrame(long frame) {
        long lim = limit;
        if (frame < 0 || frame >= (lim >>> FRAME_SHIFT)) {
            if (lim == 0) {
                throw new IllegalStateException("machine memory is closed (access to frame " + hex(frame) + ")");
            }
            throw new IllegalArgumentException("machine frame " + hex(frame) + " is outside machine memory of "
                + frames() + " frames (" + hex(size) + " bytes)");
        }
        return base + (frame << FRAME_SHIFT);
    }

    static String hex(long v) {
        return "0x" + Long.toHexString(v);
    }

    // ------------------------------------------------------------------ checked plain accessors

    public byte getByte(long pa) {
        return UnsafeApi.getByte(null, check(pa, 1));
    }

    public void putByte(long pa, byte value) {
        UnsafeApi.putByte(null, check(pa, 1), value);
    }

    public short getShort(long pa) {
        return UnsafeApi.getShort(null, check(pa, 2));
    }

    public void putShort(long pa, short value) {
        UnsafeApi.putShort(null, check(pa, 2), value);
    }

    public int getInt(long pa) {
        return UnsafeApi.getInt(null, check(pa, 4));
    }

    public void putInt(long pa, int value) {
        UnsafeApi.putInt(null, check(pa, 4), value);
    }

    public long getLong(long pa) {
        return UnsafeApi.getLong(null, check(pa, 8));
    }

    public void putLong(long pa, long value) {
        UnsafeApi.putLong(null, check(pa, 8), value);
    }

    // ------------------------------------------------------------------ checked ordered / atomic accessors

    public long getLongAcquire(long pa) {
        return UnsafeApi.getLongAcquire(null, check(pa, 8));
    }

    public void putLongRelease(long pa, long value) {
        UnsafeApi.putLongRelease(null, check(pa, 8), value);
    }

    public long getLongVolatile(long pa) {
        return UnsafeApi.getLongVolatile(null, check(pa, 8));
    }

    public void putLongVolatile(long pa, long value) {
        UnsafeApi.putLongVolatile(null, check(pa, 8), value);
    }

    public boolean compareAndSetLong(long pa, long expected, long update) {
        return UnsafeApi.compareAndSetLong(null, check(pa, 8), expected, update);
    }

    public long getAndAddLong(long pa, long delta) {
        return UnsafeApi.getAndAddLong(null, check(pa, 8), delta);
    }

    // ------------------------------------------------------------------ byte ranges

    /** Copies {@code length} bytes at {@code pa} into {@code dst[offset..]}. */
    public void getBytes(long pa, byte[] dst, int offset, int length) {
        java.util.Objects.checkFromIndexSize(offset, length, dst.length);
        long address = checkRange(pa, length);
        UnsafeApi.copyMemory(null, address, dst, UnsafeApi.arrayBaseOffset(byte[].class) + offset, length);
    }

    /** Copies {@code src[offset..offset+length)} to physical address {@code pa}. */
    public void putBytes(long pa, byte[] src, int offset, int length) {
        java.util.Objects.checkFromIndexSize(offset, length, src.length);
        long address = checkRange(pa, length);
        UnsafeApi.copyMemory(src, UnsafeApi.arrayBaseOffset(byte[].class) + offset, null, address, length);
    }

    /**
     * Copies {@code length} bytes at {@code pa} into {@code dst} at its position, advancing it (a heap or a
     * direct buffer: one copy either way, no allocation).
     */
    public void getBytes(long pa, java.nio.ByteBuffer dst, int length) {
        if (dst.isReadOnly()) {
            throw new java.nio.ReadOnlyBufferException();
        }
        if (length < 0 || length > dst.remaining()) {
            throw new java.nio.BufferOverflowException();
        }
        long address = checkRange(pa, length);
        int at = dst.position();
        if (dst.isDirect()) {
            UnsafeApi.copyMemory(null, address, null, org.agrona.BufferUtil.address(dst) + at, length);
        } else {
            UnsafeApi.copyMemory(null, address, dst.array(), UnsafeApi.arrayBaseOffset(byte[].class) + dst.arrayOffset() + at, length);
        }
        dst.position(at + length);
    }

    /** Copies {@code length} bytes of {@code src} from its position to {@code pa}, advancing it. */
    public void putBytes(long pa, java.nio.ByteBuffer src, int length) {
        if (length < 0 || length > src.remaining()) {
            throw new java.nio.BufferUnderflowException();
        }
        long address = checkRange(pa, length);
        int at = src.position();
        if (src.isDirect()) {
            UnsafeApi.copyMemory(null, org.agrona.BufferUtil.address(src) + at, null, address, length);
        } else if (src.hasArray()) {
            UnsafeApi.copyMemory(src.array(), UnsafeApi.arrayBaseOffset(byte[].class) + src.arrayOffset() + at, null, address, length);
        } else {
            throw new IllegalArgumentException("a read-only heap buffer has no array to copy from");
        }
        src.position(at + length);
    }

    // ------------------------------------------------------------------ frame operations (checked)

    /** Copies frame {@code src} to frame {@code dst} of this memory. */
    public void copyFrame(long src, long dst) {
        UnsafeApi.copyMemory(checkFrame(src), checkFrame(dst), FRAME_SIZE);
    }

    /** Copies frame {@code src} of this memory to frame {@code dstFrame} of {@code dst} (another host). */
    public void copyFrameTo(long src, MachineMemory dst, long dstFrame) {
        UnsafeApi.copyMemory(checkFrame(src), dst.checkFrame(dstFrame), FRAME_SIZE);
    }

    /** Copies frame {@code frame} into {@code dst[offset..offset+4096)}. */
    public void readFrame(long frame, byte[] dst, int offset) {
        getBytes(frame << FRAME_SHIFT, dst, offset, FRAME_SIZE);
    }

    /** Overwrites frame {@code frame} with {@code src[offset..offset+4096)}. */
    public void writeFrame(long frame, byte[] src, int offset) {
        putBytes(frame << FRAME_SHIFT, src, offset, FRAME_SIZE);
    }

    /** True when frames {@code a} and {@code b} hold the same 4096 bytes. */
    public boolean frameEquals(long a, long b) {
        return frameEqualsUnchecked(checkFrame(a) - base, checkFrame(b) - base);
    }

    /** Fills frame {@code frame} with zeros. */
    public void zeroFrame(long frame) {
        UnsafeApi.setMemory(checkFrame(frame), FRAME_SIZE, (byte) 0);
    }

    /** True when every byte of frame {@code frame} is zero. */
    public boolean isFrameZero(long frame) {
        long address = checkFrame(frame);
        for (int i = 0; i < FRAME_SIZE; i += 32) {
            if ((UnsafeApi.getLong(null, address + i) | UnsafeApi.getLong(null, address + i + 8)
                | UnsafeApi.getLong(null, address + i + 16) | UnsafeApi.getLong(null, address + i + 24)) != 0) {
                return false;
            }
        }
        return true;
    }

    /**
     * A 64-bit hash of frame {@code frame}'s contents, for content-based page sharing (ESX hashes
     * candidate pages to 64 bits). Equal contents give equal hashes in every memory and every run;
     * a hash match is a hint only, sharing must still compare the frames.
     */
    public long frameHash(long frame) {
        return FrameHash.hash(checkFrame(frame));
    }

    /** {@link #frameHash} of an all-zero frame. */
    public static long zeroFrameHash() {
        return FrameHash.ZERO;
    }

    // ------------------------------------------------------------------ unchecked hot-path accessors

    public byte getByteUnchecked(long pa) {
        return UnsafeApi.getByte(null, base + pa);
    }

    public void putByteUnchecked(long pa, byte value) {
        UnsafeApi.putByte(null, base + pa, value);
    }

    public long getLongUnchecked(long pa) {
        return UnsafeApi.getLong(null, base + pa);
    }

    public void putLongUnchecked(long pa, long value) {
        UnsafeApi.putLong(null, base + pa, value);
    }

    public long getLongAcquireUnchecked(long pa) {
        return UnsafeApi.getLongAcquire(null, base + pa);
    }

    public void putLongReleaseUnchecked(long pa, long value) {
        UnsafeApi.putLongRelease(null, base + pa, value);
    }

    public long getLongVolatileUnchecked(long pa) {
        return UnsafeApi.getLongVolatile(null, base + pa);
    }

    public boolean compareAndSetLongUnchecked(long pa, long expected, long update) {
        return UnsafeApi.compareAndSetLong(null, base + pa, expected, update);
    }

    public long getAndAddLongUnchecked(long pa, long delta) {
        return UnsafeApi.getAndAddLong(null, base + pa, delta);
    }

    public void copyFrameUnchecked(long src, long dst) {
        UnsafeApi.copyMemory(base + (src << FRAME_SHIFT), base + (dst << FRAME_SHIFT), FRAME_SIZE);
    }

    private boolean frameEqualsUnchecked(long paA, long paB) {
        long a = base + paA;
        long b = base + paB;
        for (int i = 0; i < FRAME_SIZE; i += 8) {
            if (UnsafeApi.getLong(null, a + i) != UnsafeApi.getLong(null, b + i)) {
                return false;
            }
        }
        return true;
    }

    // ------------------------------------------------------------------ lifecycle

    /** Frees the memory. Idempotent. Must not race with accesses from other threads. */
    @Override
    public void close() {
        synchronized (this) {
            if (limit == 0) {
                return;
            }
            limit = 0;
        }
        region.free();
    }

    @Override
    public String toString() {
        return "MachineMemory[" + hex(size) + " bytes, " + frames() + " frames" + (isOpen() ? "" : ", closed") + "]";
    }
}
