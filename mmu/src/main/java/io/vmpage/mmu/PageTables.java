package io.vmpage.mmu;

import java.util.function.LongSupplier;
import java.util.function.LongUnaryOperator;

/**
 * Builds and edits radix page tables in memory, in either format: x86-64 paging structures (guest or
 * host) or EPT. What an OS kernel or a hypervisor does with plain stores: it does not invalidate any
 * TLB (the caller issues INVLPG / INVEPT as software must).
 *
 * <p>Table addresses are in the tables' own address space: guest-physical for a guest's tables under
 * EPT, translated to host-physical for the stores by {@code toHost}; host-physical (identity) otherwise.
 * New tables come zero-filled from {@code newTable}. Entries are written with release stores, so a
 * walker on another thread that reads the entry (volatile) sees the table it points to initialised.
 */
public final class PageTables {
    /** Entry format: x86-64 paging or EPT. */
    public enum Format {
        /** x86-64: present = P; non-leaf entries get P | R/W | U/S (leaves decide permissions). */
        X86(Pte.P, Pte.P | Pte.RW | Pte.US, Pte.PS),
        /** EPT: present = any of R/W/X; non-leaf entries get R | W | X. */
        EPT(Ept.RWX, Ept.RWX, Ept.PS);

        final long presentBits;
        final long tableFlags;
        final long largeBit;

        Format(long presentBits, long tableFlags, long largeBit) {
            this.presentBits = presentBits;
            this.tableFlags = tableFlags;
            this.largeBit = largeBit;
        }
    }

    private final Format format;
    private final int levels;
    private final long root;
    private final LongSupplier newTable;
    private final TableMemory entries;

    /**
     * @param levels 4 or 5
     * @param newTable returns the (table-space) address of a fresh zeroed 4 KiB table
     * @param toHost maps a table-space address to host-physical for the stores
     */
    public PageTables(MachineMemory memory, Format format, int levels, LongSupplier newTable, LongUnaryOperator toHost) {
        this(format, levels, newTable, TableMemory.of(memory, toHost));
    }

    /** Tables addressed host-physically (1D paging or EPT). */
    public PageTables(MachineMemory memory, Format format, int levels, LongSupplier newTable) {
        this(memory, format, levels, newTable, LongUnaryOperator.identity());
    }

    /**
     * Tables whose entries {@code entries} loads and stores (for example a guest's tables in its
     * guest-physical memory, each store logged by the hypervisor after it lands).
     *
     * @param levels 4 or 5
     * @param newTable returns the (table-space) address of a fresh zeroed 4 KiB table
     */
    public PageTables(Format format, int levels, LongSupplier newTable, TableMemory entries) {
        if (levels != 4 && levels != 5) {
            throw new IllegalArgumentException("paging levels " + levels + " must be 4 or 5");
        }
        this.format = format;
        this.levels = levels;
        this.newTable = newTable;
        this.entries = entries;
        this.root = newTable.getAsLong();
    }

    /** Address of the root table (for CR3 or an EPTP). */
    public long root() {
        return root;
    }

    public int levels() {
        return levels;
    }

    /**
     * Maps the page of size {@code 1 << pageShift} at {@code va} to {@code pa} with leaf {@code flags}
     * (for x86 include P; for EPT the R/W/X and memory type bits). Creates missing tables. Returns the
     * table-space address of the leaf entry.
     *
     * @throws IllegalArgumentException when an address is not aligned to the page size, or a larger
     *         page already maps part of the range
     */
    public long map(long va, long pa, int pageShift, long flags) {
        if (pageShift != Pte.SHIFT_4K && pageShift != Pte.SHIFT_2M && pageShift != Pte.SHIFT_1G) {
            throw new IllegalArgumentException("page shift " + pageShift + " must be 12, 21 or 30");
        }
        long mask = (1L << pageShift) - 1;
        if ((va & mask) != 0 || (pa & mask) != 0) {
            throw new IllegalArgumentException("address " + MachineMemory.hex(va) + " -> " + MachineMemory.hex(pa)
                + " is not aligned to the " + (1L << pageShift >> 10) + " KiB page");
        }
        int leafLevel = (pageShift - Pte.SHIFT_4K) / 9 + 1;
        long table = root;
        for (int level = levels; level > leafLevel; level--) {
            long entryAddr = table + ((long) Pte.index(va, level) << 3);
            long e = entries.load(entryAddr);
            if ((e & format.presentBits) == 0) {
                long next = newTable.getAsLong();
                e = Pte.entry(next, format.tableFlags);
                entries.store(entryAddr, e);
            } else if (level <= Pte.LEVEL_PDPT && (e & format.largeBit) != 0) {
                throw new IllegalArgumentException("address " + MachineMemory.hex(va) + " is inside a larger page already mapped");
            }
            table = e & Pte.ADDRESS_MASK;
        }
        long leafAddr = table + ((long) Pte.index(va, leafLevel) << 3);
        long leaf = Pte.entry(pa, flags) | (leafLevel > 1 ? format.largeBit : 0);
        entries.store(leafAddr, leaf);
        return leafAddr;
    }

    /**
     * Table-space address of the 4 KiB leaf entry slot for {@code va}, creating the missing tables above
     * it (as {@link #map} does) but leaving the slot itself as it is, so the caller can fill it by CAS.
     *
     * @throws IllegalArgumentException when a larger page already maps {@code va}
     */
    public long leafSlot(long va) {
        long table = root;
        for (int level = levels; level > Pte.LEVEL_PT; level--) {
            long entryAddr = table + ((long) Pte.index(va, level) << 3);
            long e = entries.load(entryAddr);
            if ((e & format.presentBits) == 0) {
                e = Pte.entry(newTable.getAsLong(), format.tableFlags);
                entries.store(entryAddr, e);
            } else if (level <= Pte.LEVEL_PDPT && (e & format.largeBit) != 0) {
                throw new IllegalArgumentException("address " + MachineMemory.hex(va) + " is inside a larger page already mapped");
            }
            table = e & Pte.ADDRESS_MASK;
        }
        return table + ((long) Pte.index(va, Pte.LEVEL_PT) << 3);
    }

    /**
     * Table-space address of the entry at {@code level} on the path of {@code va}, or -1 when a table on
     * the way is missing or a larger page ends the path above {@code level}.
     */
    public long entryAddress(long va, int level) {
        long table = root;
        for (int l = levels; ; l--) {
            long entryAddr = table + ((long) Pte.index(va, l) << 3);
            if (l == level) {
                return entryAddr;
            }
            long e = entries.load(entryAddr);
            if ((e & format.presentBits) == 0 || (l <= Pte.LEVEL_PDPT && (e & format.largeBit) != 0)) {
                return -1;
            }
            table = e & Pte.ADDRESS_MASK;
        }
    }

    /** The leaf entry mapping {@code va} (any page size), or 0 when nothing maps it. */
    public long leaf(long va) {
        long addr = leafAddress(va);
        return addr < 0 ? 0 : entries.load(addr);
    }

    /** Table-space address of the leaf entry mapping {@code va}, or -1. */
    public long leafAddress(long va) {
        long table = root;
        for (int l = levels; ; l--) {
            long entryAddr = table + ((long) Pte.index(va, l) << 3);
            long e = entries.load(entryAddr);
            if ((e & format.presentBits) == 0) {
                return -1;
            }
            if (l == 1 || (l <= Pte.LEVEL_PDPT && (e & format.largeBit) != 0)) {
                return entryAddr;
            }
            table = e & Pte.ADDRESS_MASK;
        }
    }

    /** Reads the entry at a table-space address. */
    public long read(long entryAddress) {
        return entries.load(entryAddress);
    }

    /** Overwrites the entry at a table-space address (release store). */
    public void write(long entryAddress, long entry) {
        entries.store(entryAddress, entry);
    }

    /** Clears the leaf mapping {@code va}; returns the old entry (0 if none). Tables are kept. */
    public long unmap(long va) {
        long addr = leafAddress(va);
        if (addr < 0) {
            return 0;
        }
        long old = entries.load(addr);
        entries.store(addr, 0);
        return old;
    }

    /** A bump allocator of zeroed frames from {@code [start, end)} of {@code memory}, for tests and tools. */
    public static LongSupplier bumpAllocator(MachineMemory memory, long start, long end) {
        long[] next = {start};
        return () -> {
            if (next[0] + MachineMemory.FRAME_SIZE > end) {
                throw new IllegalStateException("page-table frames exhausted at " + MachineMemory.hex(end));
            }
            long frame = next[0];
            next[0] += MachineMemory.FRAME_SIZE;
            memory.zeroFrame(frame >>> MachineMemory.FRAME_SHIFT);
            return frame;
        };
    }
}
