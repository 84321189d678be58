package io.vmpage.migration;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import org.junit.jupiter.api.Test;

class PageScanTest {
    /** A single non-zero byte anywhere in the page is found, in an array and in a heap or direct buffer. */
    @Test
    void everyByteOfThePageCounts() {
        byte[] page = new byte[3 * PageScan.PAGE];
        ByteBuffer heap = ByteBuffer.allocate(3 * PageScan.PAGE);
        ByteBuffer direct = ByteBuffer.allocateDirect(3 * PageScan.PAGE);
        int at = PageScan.PAGE + 3; // unaligned on purpose
        assertTrue(PageScan.isZero(page, at) && PageScan.isZero(heap, at) && PageScan.isZero(direct, at));
        for (int i = 0; i < PageScan.PAGE; i++) {
            page[at + i] = 1;
            heap.put(at + i, (byte) 1);
            direct.put(at + i, (byte) 1);
            assertFalse(PageScan.isZero(page, at), "byte " + i);
            assertFalse(PageScan.isZero(heap, at), "byte " + i);
            assertFalse(PageScan.isZero(direct, at), "byte " + i);
            page[at + i] = 0;
            heap.put(at + i, (byte) 0);
            direct.put(at + i, (byte) 0);
        }
        page[at - 1] = 1;
        page[at + PageScan.PAGE] = 1;
        assertTrue(PageScan.isZero(page, at), "the bytes around the page do not count");
        assertThrows(IndexOutOfBoundsException.class, () -> PageScan.isZero(page, 2 * PageScan.PAGE + 1));
        assertThrows(IndexOutOfBoundsException.class, () -> PageScan.isZero(heap, 2 * PageScan.PAGE + 1));
    }
}
