package io.vmpage.mmu;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.AccessDeniedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import net.openhft.chronicle.bytes.MappedBytesStore;
import net.openhft.chronicle.bytes.MappedFile;
import net.openhft.chronicle.core.io.ReferenceOwner;

/**
 * Raw physical-memory images: a file whose byte at offset {@code n} is the byte at physical address
 * {@code n}, with no header, no trailer and no compression (a flat RAM dump such as {@code dd} of a
 * VM's memory-backing file gives).
 *
 * <pre>
 *  file offset   0            4096           8192                 file size
 *               +-------------+--------------+-----  ...  --------+- - - - - - -+
 *               | frame 0     | frame 1      |                    | zero fill   |
 *               +-------------+--------------+-----  ...  --------+- - - - - - -+
 *  phys address  0            0x1000         0x2000                 up to the next 4 KiB
 * </pre>
 *
 * <p>{@link #load} gives a new {@link MachineMemory} of the file size rounded up to whole 4 KiB frames; the
 * bytes past the end of the file read as zero. The file is mapped read-only through Chronicle Bytes, one
 * window at a time, and copied into machine memory in 1 MiB chunks, so files beyond 2 GiB load (offsets are
 * 64-bit) and the file is never modified. All-zero chunks are not copied: machine memory is already zero, so
 * a sparse image costs host RAM only for the frames that hold data.
 *
 * <p>{@link #save} writes memory (or its first {@code length} bytes) back in the same format.
 */
public final class MemoryImage {
    /** Copy buffer between the mapped file and machine memory. */
    static final int COPY_CHUNK = 1 << 20;
    /** How much of the file is mapped at once (bounds the address space a huge image needs). */
    static final long MAP_WINDOW = 256L << 20;

    private static final byte[] ZEROS = new byte[COPY_CHUNK];

    private MemoryImage() {
    }

    /**
     * Loads the image at {@code path} into new machine memory; the caller closes it. The file is not
     * modified.
     *
     * @throws IllegalArgumentException when the file is missing, not a regular file, unreadable or empty
     *         (one-line message naming the path)
     * @throws NativeMemoryException when the host cannot supply machine memory of the image's size
     * @throws UncheckedIOException when reading fails part-way
     */
    public static MachineMemory load(Path path) {
        long fileSize = checkReadable(path);
        long memorySize = (fileSize + MachineMemory.FRAME_OFFSET_MASK) & ~MachineMemory.FRAME_OFFSET_MASK;
        MachineMemory memory = MachineMemory.allocate(memorySize);
        try {
            copyIn(path, fileSize, memory);
            return memory;
        } catch (IOException e) {
            memory.close();
            throw new UncheckedIOException("memory image " + path + ": " + e.getMessage(), e);
        } catch (RuntimeException | Error e) {
            memory.close();
            throw e;
        }
    }

    private static long checkReadable(Path path) {
        if (!Files.exists(path)) {
            throw new IllegalArgumentException("memory image " + path + " does not exist");
        }
        if (!Files.isRegularFile(path)) {
            throw new IllegalArgumentException("memory image " + path + " is not a regular file");
        }
        if (!Files.isReadable(path)) {
            throw new IllegalArgumentException("memory image " + path + " is not readable");
        }
        long size;
        try {
            size = Files.size(path);
        } catch (IOException e) {
            throw new IllegalArgumentException("memory image " + path + " cannot be read: " + e.getMessage(), e);
        }
        if (size == 0) {
            throw new IllegalArgumentException("memory image " + path + " is empty");
        }
        return size;
    }

    private static void copyIn(Path path, long fileSize, MachineMemory memory) throws IOException {
        ReferenceOwner owner = ReferenceOwner.temporary("MemoryImage.load");
        byte[] buffer = new byte[COPY_CHUNK];
        MappedFile file;
        try {
            file = MappedFile.of(path.toFile(), MAP_WINDOW, 0, true);
        } catch (java.io.FileNotFoundException e) {
            throw new IllegalArgumentException("memory image " + path + " cannot be opened: " + e.getMessage(), e);
        }
        try {
            for (long window = 0; window < fileSize; window += MAP_WINDOW) {
                long windowEnd = Math.min(fileSize, window + MAP_WINDOW);
                MappedBytesStore store = file.acquireByteStore(owner, window);
                try {
                    for (long pos = window; pos < windowEnd; pos += COPY_CHUNK) {
                        int n = (int) Math.min(COPY_CHUNK, windowEnd - pos);
                        long read = store.read(pos, buffer, 0, n);
                        if (read != n) {
                            throw new IOException("short read at offset " + pos + " (" + read + " of " + n + " bytes)");
                        }
                        if (Arrays.mismatch(buffer, 0, n, ZEROS, 0, n) >= 0) {
                            memory.putBytes(pos, buffer, 0, n);
                        }
                    }
                } finally {
                    store.release(owner);
                }
            }
        } finally {
            file.releaseLast();
        }
    }

    /** Saves all of {@code memory} to {@code path} (created or truncated). */
    public static void save(MachineMemory memory, Path path) {
        save(memory, memory.size(), path);
    }

    /**
     * Saves the first {@code length} bytes of {@code memory} (any length up to its size, not necessarily
     * whole frames) to {@code path}, creating or truncating the file.
     *
     * @throws IllegalArgumentException when {@code length} is negative or beyond the memory
     * @throws UncheckedIOException when writing fails
     */
    public static void save(MachineMemory memory, long length, Path path) {
        if (length < 0 || length > memory.size()) {
            throw new IllegalArgumentException("image length " + length + " must be between 0 and the memory size "
                + memory.size());
        }
        // A plain channel, not a writable Chronicle mapping: those grow the file to whole mapping chunks.
        byte[] buffer = new byte[(int) Math.min(COPY_CHUNK, Math.max(length, 1))];
        ByteBuffer wrapped = ByteBuffer.wrap(buffer);
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
            StandardOpenOption.TRUNCATE_EXISTING)) {
            for (long pos = 0; pos < length; pos += buffer.length) {
                int n = (int) Math.min(buffer.length, length - pos);
                memory.getBytes(pos, buffer, 0, n);
                wrapped.clear().limit(n);
                while (wrapped.hasRemaining()) {
                    ch.write(wrapped);
                }
            }
        } catch (NoSuchFileException | AccessDeniedException e) {
            throw new IllegalArgumentException("memory image " + path + " cannot be written: " + e.getMessage(), e);
        } catch (IOException e) {
            throw new UncheckedIOException("memory image " + path + ": " + e.getMessage(), e);
        }
    }
}
