package io.vmpage.mmu;

import net.openhft.posix.PosixAPI;
import net.openhft.posix.PosixRuntimeException;
import org.agrona.UnsafeApi;

/**
 * Page-aligned, zero-filled native memory regions of any size: the backing of {@link MachineMemory},
 * and of the raw baselines that benchmarks compare it with (so both sit on the same kind of pages).
 *
 * <p>On Linux the region is an anonymous private mapping (through Chronicle's posix bindings): the
 * kernel zero-fills each page on first touch, so a 16 GiB machine memory costs nothing until its frames
 * are used, like a host whose RAM a hypervisor hands out on demand. The mapping is advised for
 * transparent huge pages, as KVM hosts back guest memory. Elsewhere, or when the native binding is
 * unavailable, it falls back to {@code allocateMemory} plus an explicit zero fill.
 *
 * <p>When the host cannot supply a region (the mapping fails, say {@code ENOMEM} because the size is
 * beyond what the kernel will commit or beyond the address space), {@link #allocate} throws a
 * {@link NativeMemoryException} naming the size and the operating system's error, however the native
 * binding reported it (Chronicle's JNR binding throws its own exception rather than returning
 * {@code MAP_FAILED}; other bindings return it and leave the reason in errno).
 */
public final class NativeRegion {
    private static final int PROT_READ_WRITE = 0x1 | 0x2;
    private static final int MAP_PRIVATE_ANONYMOUS = 0x02 | 0x20;
    private static final int MADV_HUGEPAGE = 14;
    private static final long MAP_FAILED = -1L;

    /** The posix binding, or null when anonymous mappings are not available here. */
    private static final PosixAPI POSIX = loadPosix();

    private final long address;
    private final long size;
    private final long rawAddress;
    private final boolean mapped;

    private NativeRegion(long address, long size, long rawAddress, boolean mapped) {
        this.address = address;
        this.size = size;
        this.rawAddress = rawAddress;
        this.mapped = mapped;
    }

    /**
     * Allocates {@code size} zero-filled bytes aligned to 4 KiB.
     *
     * @throws IllegalArgumentException when {@code size} is not positive
     * @throws NativeMemoryException when the host cannot supply the region
     */
    public static NativeRegion allocate(long size) {
        if (size <= 0) {
            throw new IllegalArgumentException("native region size " + size + " must be positive");
        }
        return POSIX != null ? map(POSIX, size) : allocateEager(size);
    }

    /** An anonymous private mapping of {@code size} bytes through {@code posix}. */
    static NativeRegion map(PosixAPI posix, long size) {
        long addr;
        try {
            addr = posix.mmap(0, size, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS, -1, 0);
        } catch (PosixRuntimeException e) { // the JNR binding throws on MAP_FAILED, with errno's description
            throw new NativeMemoryException("map", size, e.errno(), e.getMessage(), e);
        }
        if (addr == MAP_FAILED || addr == 0) { // bindings that return MAP_FAILED leave the reason in errno
            int errno = posix.lastError();
            throw new NativeMemoryException("map", size, errno, strerror(posix, errno), null);
        }
        posix.madvise(addr, size, MADV_HUGEPAGE); // advice only: failure is harmless
        return new NativeRegion(addr, size, addr, true);
    }

    /** The fallback: {@code allocateMemory} of {@code size} bytes and a frame for alignment, zero-filled. */
    static NativeRegion allocateEager(long size) {
        if (size > Long.MAX_VALUE - MachineMemory.FRAME_SIZE) {
            throw new NativeMemoryException("allocate", size, 0, "beyond any address space", null);
        }
        long raw;
        try {
            raw = UnsafeApi.allocateMemory(size + MachineMemory.FRAME_SIZE);
        } catch (OutOfMemoryError e) { // "Unable to allocate N bytes": malloc returned NULL
            throw new NativeMemoryException("allocate", size, 0, e.getMessage(), e);
        }
        long aligned = (raw + MachineMemory.FRAME_OFFSET_MASK) & ~MachineMemory.FRAME_OFFSET_MASK;
        UnsafeApi.setMemory(aligned, size, (byte) 0);
        return new NativeRegion(aligned, size, raw, false);
    }

    private static String strerror(PosixAPI posix, int errno) {
        try {
            return posix.strerror(errno);
        } catch (RuntimeException | LinkageError e) {
            return "mmap failed";
        }
    }

    /** True when regions are lazily zero-filled anonymous mappings on this host. */
    public static boolean isLazy() {
        return POSIX != null;
    }

    /** Native address of the first byte (4 KiB aligned). */
    public long address() {
        return address;
    }

    public long size() {
        return size;
    }

    /** Returns the region to the host. Not idempotent: the owner calls it once. */
    public void free() {
        if (mapped) {
            POSIX.munmap(rawAddress, size);
        } else {
            UnsafeApi.freeMemory(rawAddress);
        }
    }

    private static PosixAPI loadPosix() {
        if (!System.getProperty("os.name", "").toLowerCase(java.util.Locale.ROOT).contains("linux")
            || Boolean.getBoolean("vmpage.memory.eager")) {
            return null;
        }
        try {
            PosixAPI posix = PosixAPI.posix();
            long probe = posix.mmap(0, MachineMemory.FRAME_SIZE, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS, -1, 0);
            if (probe == MAP_FAILED || probe == 0) {
                return null;
            }
            posix.munmap(probe, MachineMemory.FRAME_SIZE);
            return posix;
        } catch (Throwable unavailable) { // no native binding here: fall back to allocate + zero fill
            return null;
        }
    }
}
