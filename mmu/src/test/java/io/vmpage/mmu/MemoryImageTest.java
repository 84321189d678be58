package io.vmpage.mmu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Raw image load and save: round trips, rounding to frames, error messages, and a read-only load. */
class MemoryImageTest {
    @TempDir
    Path dir;

    private static byte[] random(int n, long seed) {
        byte[] b = new byte[n];
        new Random(seed).nextBytes(b);
        return b;
    }

    @Test
    void roundTripOfWholeMemory() throws IOException {
        Path file = dir.resolve("ram.img");
        byte[] data = random(3 * MemoryImage.COPY_CHUNK + 8192, 1); // several copy chunks, not a power of two
        try (MachineMemory m = MachineMemory.allocate(data.length)) {
            m.putBytes(0, data, 0, data.length);
            MemoryImage.save(m, file);
        }
        assertArrayEquals(data, Files.readAllBytes(file));
        try (MachineMemory m = MemoryImage.load(file)) {
            assertEquals(data.length, m.size());
            byte[] back = new byte[data.length];
            m.getBytes(0, back, 0, back.length);
            assertArrayEquals(data, back);
        }
    }

    @Test
    void fileNotAWholeNumberOfFramesIsZeroFilledToTheNextFrame() throws IOException {
        Path file = dir.resolve("odd.img");
        byte[] data = random(4096 + 1000, 2);
        Files.write(file, data);
        try (MachineMemory m = MemoryImage.load(file)) {
            assertEquals(8192, m.size());
            byte[] back = new byte[data.length];
            m.getBytes(0, back, 0, back.length);
            assertArrayEquals(data, back);
            for (long pa = data.length; pa < m.size(); pa++) {
                assertEquals(0, m.getByte(pa), "byte at " + pa);
            }
            // and saving the first N bytes gives the original file back
            Path again = dir.resolve("again.img");
            MemoryImage.save(m, data.length, again);
            assertArrayEquals(data, Files.readAllBytes(again));
        }
    }

    @Test
    void saveTruncatesAnExistingLongerFile() throws IOException {
        Path file = dir.resolve("ram.img");
        Files.write(file, new byte[3 * 4096]);
        try (MachineMemory m = MachineMemory.allocate(4096)) {
            m.putLong(8, 0x1122_3344_5566_7788L);
            MemoryImage.save(m, file);
        }
        assertEquals(4096, Files.size(file));
        try (MachineMemory m = MemoryImage.load(file)) {
            assertEquals(0x1122_3344_5566_7788L, m.getLong(8));
        }
    }

    @Test
    void missingFileIsAOneLineErrorNamingThePath() {
        Path file = dir.resolve("nope.img");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> MemoryImage.load(file));
        assertTrue(e.getMessage().contains(file.toString()), e.getMessage());
        assertTrue(e.getMessage().contains("does not exist"), e.getMessage());
        assertTrue(!e.getMessage().contains("\n"), e.getMessage());
    }

    @Test
    void emptyFileIsAnError() throws IOException {
        Path file = Files.createFile(dir.resolve("empty.img"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> MemoryImage.load(file));
        assertTrue(e.getMessage().contains(file.toString()), e.getMessage());
        assertTrue(e.getMessage().contains("empty"), e.getMessage());
    }

    @Test
    void directoryIsAnError() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> MemoryImage.load(dir));
        assertTrue(e.getMessage().contains("not a regular file"), e.getMessage());
    }

    @Test
    void saveRejectsALengthBeyondTheMemory() {
        try (MachineMemory m = MachineMemory.allocate(4096)) {
            assertThrows(IllegalArgumentException.class, () -> MemoryImage.save(m, 4097, dir.resolve("x")));
            assertThrows(IllegalArgumentException.class, () -> MemoryImage.save(m, -1, dir.resolve("x")));
        }
    }

    @Test
    void loadingAndWritingTheCopyLeavesTheFileUnchanged() throws IOException {
        Path file = dir.resolve("ro.img");
        byte[] data = random(5 * 4096 + 17, 3);
        Files.write(file, data);
        FileTime modified = FileTime.fromMillis(1_000_000_000L);
        Files.setLastModifiedTime(file, modified);
        try (MachineMemory m = MemoryImage.load(file)) {
            m.putLong(0, -1L); // the copy is private
            m.putLong(m.size() - 8, -1L);
        }
        assertArrayEquals(data, Files.readAllBytes(file));
        assertEquals(data.length, Files.size(file));
        assertEquals(modified, Files.getLastModifiedTime(file));
    }

    @Test
    void loadsAReadOnlyFile() throws IOException {
        Path file = dir.resolve("readonly.img");
        Files.write(file, random(4096, 4));
        assertTrue(file.toFile().setWritable(false, false));
        try (MachineMemory m = MemoryImage.load(file)) {
            assertEquals(4096, m.size());
        } finally {
            file.toFile().setWritable(true, false);
        }
    }

    /** A sparse file just over 2 GiB: data beyond the 31-bit offset range and across several map windows. */
    @Test
    void imagesBeyondTwoGiBLoad() throws IOException {
        Path file = dir.resolve("big.img");
        long size = (2L << 30) + 4096 + 100;
        long[] offsets = {0, (2L << 30) - 4, (2L << 30) + 4096, size - 8, MemoryImage.MAP_WINDOW - 3};
        try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
            raf.setLength(size);
            for (long off : offsets) {
                raf.seek(off);
                raf.writeLong(off ^ 0x5A5A_5A5A_5A5A_5A5AL);
            }
        }
        try (MachineMemory m = MemoryImage.load(file)) {
            assertEquals((2L << 30) + 8192, m.size());
            byte[] b = new byte[8];
            for (long off : offsets) {
                m.getBytes(off, b, 0, 8);
                long v = 0;
                for (byte x : b) {
                    v = v << 8 | (x & 0xFF); // RandomAccessFile writes big-endian
                }
                assertEquals(off ^ 0x5A5A_5A5A_5A5A_5A5AL, v, "at offset " + off);
            }
            assertEquals(0, m.getLong(1L << 30));
        }
        assertEquals(size, Files.size(file));
    }
}
