package io.vmpage.mmu;

import net.openhft.posix.PosixAPI;
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
     * @throws OutOfMemoryError when the host cannot supply the region
     */
    public static NativeRegion allocate(long size) {
        if (size <= 0) {
            throw new IllegalArgumentException("native region size " + size + " must be positive");
        }
        if (POSIX != null) {
            long addr = POSIX.mmap(0, size, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS, -1, 0);
            if (addr != MAP_FAILED && addr != 0) {
                POSIX.madvise(addr, size, MADV_HUGEPAGE); // advice only: failure is harmless
                return new NativeRegion(addr, size, addr, true);
            }
            throw new OutOfMemoryError("cannot map " + size + " bytes of machine memory");
        }
        long raw = UnsafeApi.allocateMemory(size + MachineMemory.FRAME_SIZE);
        long aligned = (raw + MachineMemory.FRAME_OFFSET_MASK) & ~MachineMemory.FRAME_OFFSET_MASK;
        UnsafeApi.setMemory(aligned, size, (byte) 0);
        return new NativeRegion(aligned, size, raw, false);
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
