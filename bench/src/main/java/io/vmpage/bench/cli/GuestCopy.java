package io.vmpage.bench.cli;

import io.vmpage.mmu.MachineMemory;
import java.util.Arrays;

/**
 * What a pre-copy builds on the destination, in one process: a copy of guest-physical memory, made page
 * by page (a bulk copy, then the pages each harvest reports) and compared with the guest byte for byte.
 * The copy is off-heap machine memory with 64-bit offsets, lazily zero-filled, so guests of any size work
 * (a {@code byte[]} stops at 2 GiB) and pages never copied cost nothing; an all-zero page is not written
 * over a copy page that is still zero.
 *
 * <p>Not thread-safe: the copier runs while the guest's vCPUs are stopped.
 */
final class GuestCopy implements AutoCloseable {
    /** Reads guest-physical memory, as {@code Vm.readPhysical} does. */
    @FunctionalInterface
    interface Source {
        void read(long gpa, byte[] dst, int offset, int length);
    }


    private final Source source;
    private final long frames;
    private final MachineMemory copy;
    private final byte[] page = new byte[MachineMemory.FRAME_SIZE];
    private final byte[] copied = new byte[MachineMemory.FRAME_SIZE];

    /**
     * A copy of {@code bytes} (whole 4 KiB pages) of guest memory read through {@code source}, all zero.
     *
     * @throws io.vmpage.mmu.NativeMemoryException when the host cannot supply the copy's memory
     */
    GuestCopy(Source source, long bytes) {
        if (bytes <= 0 || (bytes & MachineMemory.FRAME_OFFSET_MASK) != 0) {
            throw new IllegalArgumentException("guest copy of " + bytes + " bytes must be a positive whole number of pages");
        }
        this.source = source;
        this.frames = bytes >>> MachineMemory.FRAME_SHIFT;
        this.copy = MachineMemory.allocate(bytes);
    }

    /** Pages covered. */
    long frames() {
        return frames;
    }

    /** Copies every page: the bulk copy a migration starts with. */
    void copyAll() {
        for (long gfn = 0; gfn < frames; gfn++) {
            copyPage(gfn);
        }
    }

    /** Copies guest page {@code gfn} over the copy's page {@code gfn}. */
    void copyPage(long gfn) {
        source.read(gfn << MachineMemory.FRAME_SHIFT, page, 0, MachineMemory.FRAME_SIZE);
        if (io.vmpage.migration.PageScan.isZero(page, 0) && copy.isFrameZero(gfn)) {
            return; // already equal, and the copy's page stays unpopulated
        }
        copy.writeFrame(gfn, page, 0);
    }

    /** The first guest page whose bytes differ from the copy's, or -1 when the copy equals guest memory. */
    long firstDifference() {
        for (long gfn = 0; gfn < frames; gfn++) {
            source.read(gfn << MachineMemory.FRAME_SHIFT, page, 0, MachineMemory.FRAME_SIZE);
            copy.readFrame(gfn, copied, 0);
            if (!Arrays.equals(page, copied)) {
                return gfn;
            }
        }
        return -1;
    }

    /** The copy's 8 bytes at guest-physical {@code gpa} (8-byte aligned). */
    long readLong(long gpa) {
        return copy.getLong(gpa);
    }

    @Override
    public void close() {
        copy.close();
    }
}
