package io.vmpage.engine.swap;

import io.vmpage.engine.FrameFetcher;
import io.vmpage.engine.memory.P2mEntry;
import io.vmpage.mmu.MachineMemory;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;
import net.openhft.chronicle.bytes.MappedBytesStore;
import net.openhft.chronicle.bytes.MappedFile;
import net.openhft.chronicle.core.io.ReferenceOwner;

/**
 * A host swap device: a real file of 4 KiB slots, memory-mapped through Chronicle Bytes (64-bit offsets,
 * so the file may exceed 2 GiB), where the host swaps out guest pages it reclaims ({@code Vm.swapOut}) and
 * from which a touch swaps them back in, through the engine's one fetch-on-fault path ({@link FrameFetcher}:
 * the p2m entry says "on swap, slot N" and the first touch brings it in, as post-copy brings in a frame
 * that has not arrived).
 *
 * <pre>
 *  file offset   0          4096        8192                       slots x 4096
 *               +----------+-----------+----- ... ----------------+
 *               | slot 0   | slot 1    |                          |
 *               +----------+-----------+----- ... ----------------+
 *  slot map      one bit per slot (1 = holds a page), CAS per 64-slot word
 * </pre>
 *
 * <p>The whole file is written with zeros when the device is created, so its blocks exist before it is
 * mapped: a full disk fails the creation with a clear message, never a later store into the mapping (a
 * store into a hole the file system cannot fill would kill the process with SIGBUS). A file removed
 * while mapped keeps working (its inode lives until the mapping goes), so nothing is lost then either.
 *
 * <p>Slots are taken lock-free: each word of the slot map is claimed bit by bit by CAS, starting from a
 * rotating hint. Any thread may allocate, free, write and read; one slot is written by one swap-out and
 * read by one swap-in at a time (the p2m entry's FETCHING claim orders them).
 *
 * <p>Fault injection ({@link #failNextWrites}, {@link #failNextReads}) makes the next operations fail as a
 * real I/O error would, for tests and stress runs.
 */
public final class SwapDevice implements FrameFetcher, AutoCloseable {
    private static final int SLOT = MachineMemory.FRAME_SIZE;
    /** Bytes mapped per Chronicle chunk. */
    private static final long CHUNK = 64L << 20;

    private final Path path;
    private final long slots;
    private final long chunk;
    private final MappedFile file;
    private final MappedBytesStore[] stores;
    private final ReferenceOwner owner = ReferenceOwner.temporary("SwapDevice");
    /** One bit per slot, 1 = in use. CAS per word. */
    private final AtomicLongArray used;
    /** Where the next allocation starts looking (a word index); racy by design. */
    private final AtomicLong hint = new AtomicLong();
    private final AtomicLong inUse = new AtomicLong();
    private final AtomicInteger failWrites = new AtomicInteger();
    private final AtomicInteger failReads = new AtomicInteger();
    private final ThreadLocal<byte[]> staging = ThreadLocal.withInitial(() -> new byte[SLOT]);
    private volatile boolean closed;

    private SwapDevice(Path path, long slots, long chunk, MappedFile file, MappedBytesStore[] stores) {
        this.path = path;
        this.slots = slots;
        this.chunk = chunk;
        this.file = file;
        this.stores = stores;
        this.used = new AtomicLongArray((int) ((slots + 63) / 64));
    }

    /**
     * Creates (or truncates) the swap file {@code path} with room for at least {@code slots} pages and maps it.
     *
     * @throws IllegalArgumentException when {@code slots} is not positive or too large
     * @throws SwapException when the file cannot be created, written (a full disk) or mapped
     */
    public static SwapDevice create(Path path, long slots) {
        if (slots <= 0 || slots > P2mEntry.MAX_PAYLOAD || slots > (long) Integer.MAX_VALUE * 64) {
            throw new IllegalArgumentException("a swap device of " + slots + " slots: it needs at least one, at most "
                + P2mEntry.MAX_PAYLOAD);
        }
        long bytes = slots * SLOT;
        long chunk = Math.min(CHUNK, bytes);
        long size = (bytes + chunk - 1) / chunk * chunk; // whole chunks: a writable mapping grows the file to them
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
            StandardOpenOption.TRUNCATE_EXISTING)) {
            ByteBuffer zeros = ByteBuffer.allocateDirect(1 << 20);
            for (long at = 0; at < size; at += zeros.capacity()) {
                zeros.clear().limit((int) Math.min(zeros.capacity(), size - at));
                while (zeros.hasRemaining()) {
                    ch.write(zeros, at + zeros.position());
                }
            }
            ch.force(false);
        } catch (IOException | RuntimeException e) {
            throw new SwapException("swap file " + path + ": cannot reserve " + size + " bytes: " + e.getMessage(), e);
        }
        MappedFile file = null;
        MappedBytesStore[] stores = new MappedBytesStore[(int) (size / chunk)];
        ReferenceOwner owner = ReferenceOwner.temporary("SwapDevice.create");
        try {
            file = MappedFile.of(path.toFile(), chunk, 0, false);
            SwapDevice device = new SwapDevice(path, size / SLOT, chunk, file, stores);
            for (int i = 0; i < stores.length; i++) {
                stores[i] = file.acquireByteStore(device.owner, (long) i * chunk);
            }
            return device;
        } catch (IOException | RuntimeException e) {
            for (MappedBytesStore s : stores) {
                if (s != null) {
                    s.release(owner);
                }
            }
            if (file != null) {
                file.releaseLast();
            }
            throw new SwapException("swap file " + path + ": cannot map it: " + e.getMessage(), e);
        }
    }

    /** Slots on the device. */
    public long slots() {
        return slots;
    }

    /** Slots holding a page now. */
    public long usedSlots() {
        return inUse.get();
    }

    public Path path() {
        return path;
    }

    /** A free slot, taken; -1 when every slot holds a page. Lock-free. */
    public long allocate() {
        int words = used.length();
        int start = (int) Math.floorMod(hint.get(), (long) words);
        for (int i = 0; i < words; i++) {
            int w = (start + i) % words;
            long bits = used.get(w);
            while (bits != -1L) {
                int bit = Long.numberOfTrailingZeros(~bits);
                long slot = (long) w * 64 + bit;
                if (slot >= slots) {
                    break; // the last word's bits past the end
                }
                if (used.compareAndSet(w, bits, bits | (1L << bit))) {
                    hint.set(w);
                    inUse.incrementAndGet();
                    return slot;
                }
                bits = used.get(w);
            }
        }
        return -1;
    }

    /** Gives slot {@code slot} back. */
    public void free(long slot) {
        check(slot);
        int w = (int) (slot >>> 6);
        long mask = 1L << (slot & 63);
        while (true) {
            long bits = used.get(w);
            if ((bits & mask) == 0) {
                throw new IllegalStateException("swap slot " + slot + " freed twice");
            }
            if (used.compareAndSet(w, bits, bits & ~mask)) {
                inUse.decrementAndGet();
                return;
            }
        }
    }

    /**
     * Writes the 4096 bytes at host-physical {@code frameAddress} of {@code memory} into slot {@code slot}.
     *
     * @throws SwapException when the write fails (an injected fault, a closed device)
     */
    public void write(long slot, MachineMemory memory, long frameAddress) {
        check(slot);
        if (failWrites.getAndUpdate(n -> Math.max(0, n - 1)) > 0) {
            throw new SwapException("swap file " + path + ": write of slot " + slot + " failed (injected I/O error)");
        }
        byte[] page = staging.get();
        memory.getBytes(frameAddress, page, 0, SLOT);
        long offset = slot * SLOT;
        try {
            stores[(int) (offset / chunk)].write(offset, page, 0, SLOT);
        } catch (RuntimeException e) {
            throw new SwapException("swap file " + path + ": write of slot " + slot + " failed: " + e.getMessage(), e);
        }
    }

    /**
     * Reads slot {@code slot} into host-physical {@code frameAddress} of {@code memory}.
     *
     * @throws SwapException when the read fails (an injected fault, a closed device)
     */
    public void read(long slot, MachineMemory memory, long frameAddress) {
        check(slot);
        if (failReads.getAndUpdate(n -> Math.max(0, n - 1)) > 0) {
            throw new SwapException("swap file " + path + ": read of slot " + slot + " failed (injected I/O error)");
        }
        byte[] page = staging.get();
        long offset = slot * SLOT;
        try {
            long n = stores[(int) (offset / chunk)].read(offset, page, 0, SLOT);
            if (n != SLOT) {
                throw new SwapException("swap file " + path + ": short read of slot " + slot + " (" + n + " bytes)");
            }
        } catch (SwapException e) {
            throw e;
        } catch (RuntimeException e) {
            throw new SwapException("swap file " + path + ": read of slot " + slot + " failed: " + e.getMessage(), e);
        }
        memory.putBytes(frameAddress, page, 0, SLOT);
    }

    /**
     * The swap-in of the engine's fetch-on-fault path: the frame's p2m entry said "on swap, slot
     * {@code payload}"; its contents go into the fresh frame and the slot is free again. A failed read
     * leaves the slot (and the page on it) as it was, and the access that touched it fails.
     */
    @Override
    public void fetch(long gfn, int kind, long payload, MachineMemory memory, long frameAddress) {
        if (kind != P2mEntry.SWAPPED) {
            throw new IllegalStateException("the swap device brings in swapped frames, not " + P2mEntry.describe(P2mEntry.notPresent(kind, payload)));
        }
        read(payload, memory, frameAddress);
        free(payload);
    }

    /** The next {@code n} writes fail as I/O errors do. */
    public void failNextWrites(int n) {
        failWrites.set(n);
    }

    /** The next {@code n} reads fail as I/O errors do. */
    public void failNextReads(int n) {
        failReads.set(n);
    }

    private void check(long slot) {
        if (closed) {
            throw new SwapException("swap file " + path + " is closed");
        }
        if (slot < 0 || slot >= slots) {
            throw new IllegalArgumentException("swap slot " + slot + " is outside 0.." + (slots - 1));
        }
    }

    /** Unmaps the file (it stays on disk). Pages still on it are lost to their VMs: the host closes it last. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        for (MappedBytesStore s : stores) {
            s.release(owner);
        }
        file.releaseLast();
    }

    @Override
    public String toString() {
        return "SwapDevice[" + path + ", " + usedSlots() + "/" + slots + " slots]";
    }
}
