package io.vmpage.bench.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.NativeRegion;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/**
 * The copy {@code vmpage dirty-log} builds from its harvests, on a guest just over 2 GiB (beyond any
 * {@code byte[]} and any {@code int} offset): pages are copied to and compared at their own 64-bit offsets.
 * The guest is a map of the few pages that are not zero; the copy is lazily zero-filled, so only those
 * pages take host memory.
 */
class GuestCopyTest {
    private static final long FRAMES = (1L << 31 >>> MachineMemory.FRAME_SHIFT) + 3; // 2 GiB + 3 pages
    /** First page above 2^31 bytes: (int) of its address is negative. */
    private static final long HIGH = (1L << 31 >>> MachineMemory.FRAME_SHIFT) + 1;
    private static final long LAST = FRAMES - 1;

    /** Guest page -> its first 8 bytes (little-endian); every other byte of guest memory is zero. */
    private final Map<Long, Long> guest = new HashMap<>();

    private void read(long gpa, byte[] dst, int offset, int length) {
        assertEquals(0, gpa & MachineMemory.FRAME_OFFSET_MASK, "page-aligned reads");
        assertEquals(MachineMemory.FRAME_SIZE, length, "one page at a time");
        Arrays.fill(dst, offset, offset + length, (byte) 0);
        Long first = guest.get(gpa >>> MachineMemory.FRAME_SHIFT);
        if (first != null) {
            ByteBuffer.wrap(dst, offset, 8).order(ByteOrder.LITTLE_ENDIAN).putLong(first);
        }
    }

    @Test
    void pagesBeyondTwoGiBAreCopiedAndComparedAtTheirOwnOffsets() {
        Assumptions.assumeTrue(NativeRegion.isLazy(), "lazily populated host memory");
        guest.put(1L, 0x1111L);
        guest.put(HIGH, 0xAAAAL);
        guest.put(LAST, 0xBBBBL);
        try (GuestCopy copy = new GuestCopy(this::read, FRAMES << MachineMemory.FRAME_SHIFT)) {
            assertEquals(FRAMES, copy.frames());
            assertEquals(1, copy.firstDifference(), "before the bulk copy: page 0 is equal (zero), page 1 is not");
            copy.copyAll();
            assertEquals(-1, copy.firstDifference());
            assertEquals(0xAAAAL, copy.readLong(HIGH << MachineMemory.FRAME_SHIFT));
            assertEquals(0xBBBBL, copy.readLong(LAST << MachineMemory.FRAME_SHIFT));
            assertEquals(0x1111L, copy.readLong(1L << MachineMemory.FRAME_SHIFT), "no 32-bit wrap onto low pages");

            guest.put(HIGH, 0xCCCCL); // written after the bulk copy: found, then fixed by copying that page
            assertEquals(HIGH, copy.firstDifference());
            copy.copyPage(HIGH);
            assertEquals(-1, copy.firstDifference());
            assertEquals(0xCCCCL, copy.readLong(HIGH << MachineMemory.FRAME_SHIFT));

            guest.remove(LAST); // the last page became zero again: the zero page is copied over it
            assertEquals(LAST, copy.firstDifference());
            copy.copyPage(LAST);
            assertEquals(-1, copy.firstDifference());
        }
    }

    @Test
    void sizeMustBeWholePages() {
        assertThrows(IllegalArgumentException.class, () -> new GuestCopy(this::read, 4097));
        assertThrows(IllegalArgumentException.class, () -> new GuestCopy(this::read, 0));
    }
}
