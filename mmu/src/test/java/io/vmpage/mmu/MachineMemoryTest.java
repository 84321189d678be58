package io.vmpage.mmu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

class MachineMemoryTest {
    private static final long MIB = 1L << 20;

    @Test
    void sizeMustBeWholeFrames() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> MachineMemory.allocate(4097));
        assertTrue(e.getMessage().contains("4097"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> MachineMemory.allocate(0));
        assertThrows(IllegalArgumentException.class, () -> MachineMemory.allocate(-4096));
    }

    @Test
    void freshMemoryIsZeroAndSized() {
        try (MachineMemory m = MachineMemory.allocate(4 * MIB)) {
            assertEquals(4 * MIB, m.size());
            assertEquals(1024, m.frames());
            for (long f = 0; f < m.frames(); f++) {
                assertTrue(m.isFrameZero(f));
            }
            assertEquals(0, m.getLong(4 * MIB - 8));
        }
    }

    @Test
    void plainAccessorsOfEveryWidth() {
        try (MachineMemory m = MachineMemory.allocate(MIB)) {
            m.putByte(3, (byte) 0x7f);
            m.putShort(6, (short) 0x1234);
            m.putInt(12, 0xCAFEBABE);
            m.putLong(16, 0x0123_4567_89AB_CDEFL);
            assertEquals((byte) 0x7f, m.getByte(3));
            assertEquals((short) 0x1234, m.getShort(6));
            assertEquals(0xCAFEBABE, m.getInt(12));
            assertEquals(0x0123_4567_89AB_CDEFL, m.getLong(16));
            // little-endian, as x86 memory is
            assertEquals((byte) 0xEF, m.getByte(16));
            assertEquals(0x89AB_CDEF, m.getInt(16));
            assertEquals(m.getLong(16), m.getLongUnchecked(16));
        }
    }

    @Test
    void orderedAndAtomicAccessors() {
        try (MachineMemory m = MachineMemory.allocate(MIB)) {
            m.putLongRelease(64, 5);
            assertEquals(5, m.getLongAcquire(64));
            m.putLongVolatile(72, 9);
            assertEquals(9, m.getLongVolatile(72));
            assertTrue(m.compareAndSetLong(64, 5, 6));
            assertFalse(m.compareAndSetLong(64, 5, 7));
            assertEquals(6, m.getLong(64));
            assertEquals(6, m.getAndAddLong(64, 10));
            assertEquals(16, m.getLong(64));
        }
    }

    @Test
    void uncheckedAccessorsSeeTheSameMemory() {
        try (MachineMemory m = MachineMemory.allocate(MIB)) {
            assertTrue(m.contains(0, MIB));
            assertTrue(m.contains(MIB - 8, 8));
            assertFalse(m.contains(MIB - 4, 8));
            assertFalse(m.contains(-8, 8));
            m.putByteUnchecked(5, (byte) 9);
            assertEquals(9, m.getByte(5));
            assertEquals(9, m.getByteUnchecked(5));
            m.putLongReleaseUnchecked(16, 7);
            assertEquals(7, m.getLongAcquireUnchecked(16));
            assertEquals(7, m.getLongVolatileUnchecked(16));
            assertTrue(m.compareAndSetLongUnchecked(16, 7, 8));
            assertEquals(8, m.getAndAddLongUnchecked(16, 2));
            assertEquals(10, m.getLong(16));
            m.putLongUnchecked(3 * 4096L, 42);
            m.copyFrameUnchecked(3, 4);
            assertEquals(42, m.getLong(4 * 4096L));
            assertTrue(m.frameEquals(3, 4));
        }
    }

    @Test
    void boundsErrorsNameTheAddressAndTheSize() {
        try (MachineMemory m = MachineMemory.allocate(MIB)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> m.getLong(MIB));
            assertTrue(e.getMessage().contains("0x100000") && e.getMessage().contains("outside"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> m.getLong(MIB - 4));
            assertThrows(IllegalArgumentException.class, () -> m.putByte(-1, (byte) 1));
            assertThrows(IllegalArgumentException.class, () -> m.getLong(Long.MAX_VALUE));
            assertThrows(IllegalArgumentException.class, () -> m.getLong(Long.MIN_VALUE));
            assertThrows(IllegalArgumentException.class, () -> m.compareAndSetLong(MIB, 0, 1));
            assertThrows(IllegalArgumentException.class, () -> m.copyFrame(0, 256));
            assertThrows(IllegalArgumentException.class, () -> m.frameHash(-1));
            assertThrows(IllegalArgumentException.class, () -> m.getBytes(MIB - 2, new byte[4], 0, 4));
            assertThrows(IndexOutOfBoundsException.class, () -> m.getBytes(0, new byte[4], 2, 4));
            IllegalArgumentException align = assertThrows(IllegalArgumentException.class, () -> m.getLong(12));
            assertTrue(align.getMessage().contains("aligned"), align.getMessage());
            assertThrows(IllegalArgumentException.class, () -> m.compareAndSetLong(4, 0, 1));
            assertThrows(IllegalArgumentException.class, () -> m.getInt(2));
            assertThrows(IllegalArgumentException.class, () -> m.getShort(1));
        }
    }

    @Test
    void useAfterCloseIsAnErrorNotACrash() {
        MachineMemory m = MachineMemory.allocate(MIB);
        m.putLong(0, 1);
        m.close();
        m.close(); // idempotent
        assertFalse(m.isOpen());
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> m.getLong(0));
        assertTrue(e.getMessage().contains("closed"), e.getMessage());
        assertThrows(IllegalStateException.class, () -> m.putLong(8, 1));
        assertThrows(IllegalStateException.class, () -> m.compareAndSetLong(0, 1, 2));
        assertThrows(IllegalStateException.class, () -> m.copyFrame(0, 1));
        assertThrows(IllegalStateException.class, () -> m.isFrameZero(0));
        assertThrows(IllegalStateException.class, () -> m.getBytes(0, new byte[8], 0, 8));
    }

    @Test
    void byteRangesAndFrameIo() {
        try (MachineMemory m = MachineMemory.allocate(MIB)) {
            byte[] data = new byte[100];
            new Random(1).nextBytes(data);
            m.putBytes(4090, data, 0, data.length); // crosses a frame boundary
            byte[] back = new byte[100];
            m.getBytes(4090, back, 0, back.length);
            assertArrayEquals(data, back);

            byte[] frame = new byte[MachineMemory.FRAME_SIZE];
            new Random(2).nextBytes(frame);
            m.writeFrame(7, frame, 0);
            byte[] read = new byte[MachineMemory.FRAME_SIZE];
            m.readFrame(7, read, 0);
            assertArrayEquals(frame, read);
        }
    }

    @Test
    void frameCopyCompareZeroAndHash() {
        try (MachineMemory m = MachineMemory.allocate(MIB); MachineMemory other = MachineMemory.allocate(MIB)) {
            Random r = new Random(3);
            for (int i = 0; i < 512; i++) {
                m.putLong(5 * 4096L + i * 8L, r.nextLong());
            }
            assertFalse(m.isFrameZero(5));
            assertFalse(m.frameEquals(5, 6));
            long h5 = m.frameHash(5);
            assertNotEquals(h5, m.frameHash(6));

            m.copyFrame(5, 6);
            assertTrue(m.frameEquals(5, 6));
            assertEquals(h5, m.frameHash(6));

            m.copyFrameTo(5, other, 9);
            assertEquals(h5, other.frameHash(9), "equal contents hash equally across memories");

            // a single flipped bit anywhere changes equality and (practically) the hash
            long last = 6 * 4096L + 4088;
            m.putLong(last, m.getLong(last) ^ (1L << 63));
            assertFalse(m.frameEquals(5, 6));
            assertNotEquals(h5, m.frameHash(6));

            m.zeroFrame(6);
            assertTrue(m.isFrameZero(6));
            assertEquals(m.frameHash(0), m.frameHash(6), "zero frames hash alike");
            m.putByte(6 * 4096L + 4095, (byte) 1);
            assertFalse(m.isFrameZero(6), "the last byte counts");
        }
    }

    @Test
    void hashSpreadsOverDistinctFrames() {
        try (MachineMemory m = MachineMemory.allocate(4 * MIB)) {
            java.util.HashSet<Long> hashes = new java.util.HashSet<>();
            for (long f = 0; f < m.frames(); f++) {
                m.putLong(f << 12, f); // frames differing only in their first word
                hashes.add(m.frameHash(f));
            }
            assertEquals(m.frames(), hashes.size());
        }
    }

    @Test
    void addressesAbove4GiB() {
        long size = 5L << 30; // 5 GiB: beyond a 2 GiB buffer and beyond 32-bit addresses
        try (MachineMemory m = MachineMemory.allocate(size)) {
            long high = (4L << 30) + 0x1238;
            m.putLong(high, 0xDEADBEEFL);
            assertEquals(0xDEADBEEFL, m.getLong(high));
            assertEquals(0, m.getLong(high & 0xFFFF_FFFFL), "no 32-bit wrap-around");
            long lastFrame = m.frames() - 1;
            m.putLong(size - 8, -1L);
            assertTrue(m.compareAndSetLong(size - 8, -1L, 7L));
            m.copyFrame(lastFrame, 1);
            assertEquals(7L, m.getLong(4096 + 4088));
            assertThrows(IllegalArgumentException.class, () -> m.getLong(size));
        }
    }

    @Test
    void sixteenGiBIsPopulatedOnlyWhereTouched() {
        org.junit.jupiter.api.Assumptions.assumeTrue(NativeRegion.isLazy(), "lazy anonymous mapping on this host");
        long size = 16L << 30;
        try (MachineMemory m = MachineMemory.allocate(size)) {
            assertEquals(4L << 20, m.frames());
            m.putLong(size - 8, 42);
            m.putLong(0, 7);
            assertEquals(42, m.getLong(size - 8));
            assertTrue(m.isFrameZero(m.frames() / 2));
            m.copyFrame(m.frames() - 1, 3);
            assertEquals(42, m.getLong(3 * 4096L + 4088));
        }
    }

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void concurrentCasAndAddFromSeveralThreadsLoseNothing() throws Exception {
        int threads = 4;
        int perThread = 200_000;
        try (MachineMemory m = MachineMemory.allocate(MIB)) {
            ExecutorService pool = Executors.newFixedThreadPool(threads);
            CountDownLatch start = new CountDownLatch(1);
            List<Future<?>> futures = new ArrayList<>();
            for (int t = 0; t < threads; t++) {
                futures.add(pool.submit(() -> {
                    start.await();
                    for (int i = 0; i < perThread; i++) {
                        long seen;
                        do {
                            seen = m.getLongVolatile(128);
                        } while (!m.compareAndSetLong(128, seen, seen + 1));
                        m.getAndAddLong(256, 2);
                    }
                    return null;
                }));
            }
            start.countDown();
            for (Future<?> f : futures) {
                f.get(50, TimeUnit.SECONDS);
            }
            pool.shutdown();
            assertEquals((long) threads * perThread, m.getLong(128));
            assertEquals(2L * threads * perThread, m.getLong(256));
        }
    }
}
