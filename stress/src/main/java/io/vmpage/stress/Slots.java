package io.vmpage.stress;

import io.vmpage.engine.dirty.DirtyBitmap;
import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.dirty.DirtyTracking;
import io.vmpage.mmu.Access;
import io.vmpage.mmu.Ept;
import io.vmpage.mmu.Fault;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Mmu;
import io.vmpage.mmu.Pte;
import io.vmpage.mmu.Translation;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Per-state storage for the jcstress tests, carved out of memory shared by every state of a fork.
 *
 * <p>jcstress creates a fresh state object for every trial (hundreds of thousands per second), far too
 * many for one {@code mmap} (and one direct buffer for a bitmap) each, and nothing tells a state when its
 * trial is over so it could be freed. Instead each state takes the next of {@link #COUNT} slots, round
 * robin; slots are a cache line apart so that neighbouring states do not share a line. A slot is reused
 * only after {@code COUNT} further states were created, long after its trial has ended: jcstress keeps at
 * most one epoch of {@code -strideCount} x {@code -strideSize} states live (40 x 256 = 10,240 in the quick
 * and default presets), so raise {@link #COUNT} before raising those past it. The constructor of each
 * test resets its slot. Everything lives until the fork exits. What a slot owns:
 * <ul>
 * <li>word {@code 8s} of {@link #BITMAP} (frames {@code 512s .. 512s+63}), for the bitmap tests;
 * <li>the entry at {@code 64s} of {@link #ENTRIES} and word {@code s} of the bitmap of {@link #LOG} (guest
 *     frames {@code 64s .. 64s+63}), for the fault-side / harvest-side tests of each entry format;
 * <li>a real leaf in each of two page-table hierarchies that the mmu's walker walks: the x86 PTE mapping
 *     virtual page {@code 8s} in {@link #X86} and the EPT leaf mapping guest-physical page {@code 8s}
 *     in {@link #EPT} ({@link #x86Leaf}, {@link #eptLeaf}), for the tests where the hardware's A/D update
 *     races an engine change.
 * </ul>
 *
 * <p>{@link #LOG} is the engine's own dirty log ({@code DirtyLog} and its engine-side {@code Writer}),
 * detached from any VM ({@code Writer.detached}): the fault and harvest sides under test are the production ones,
 * and nothing else (no vCPU, no backend sweep) touches the entries.
 */
final class Slots {
    /** Slots per fork. */
    static final int COUNT = 1 << 16;
    private static final int LINE = 64;

    static final DirtyBitmap BITMAP = new DirtyBitmap((long) COUNT * LINE * Byte.SIZE);

    /** One entry per slot for the fault-side / harvest-side tests. */
    static final MachineMemory ENTRIES = MachineMemory.allocate((long) COUNT * LINE);
    /** A dirty log, on with write protection, with one bitmap word per slot. */
    static final DirtyLog.Writer LOG = logOn();

    // Page tables of the walker tests. Frame layout in each memory: 0 = top (PML4), 1 = PDPT, 2..3 =
    // page directories, 4..1027 = the 1024 page tables; slot s's leaf is entry 8(s % 64) of table
    // 4 + s / 64, mapping page 8s. The EPT memory also holds the guest's own two tables (frames 1028 and
    // 1029, at guest-physical pages 1 and 2): a PML4 and a PDPT of 1 GiB pages mapping the first 2 GiB
    // one to one, so guest-virtual page 8s is guest-physical page 8s.
    private static final int TABLES = 4;
    private static final long TABLE_FRAMES = TABLES + (long) COUNT / 64;
    static final MachineMemory X86 = MachineMemory.allocate((TABLE_FRAMES + 2) << MachineMemory.FRAME_SHIFT);
    static final MachineMemory EPT = MachineMemory.allocate((TABLE_FRAMES + 2) << MachineMemory.FRAME_SHIFT);
    private static final long GUEST_PML4_GPA = 1L << MachineMemory.FRAME_SHIFT;
    private static final long EPTP = buildTables();

    /** The data frame every test leaf maps (the walks never touch data). */
    static final long DATA_FRAME = 0x75;

    private static final ThreadLocal<Walking> X86_WALKER = ThreadLocal.withInitial(() -> new Walking(X86, 0));
    private static final ThreadLocal<Walking> EPT_WALKER = ThreadLocal.withInitial(() -> new Walking(EPT, EPTP));

    private static final AtomicInteger NEXT = new AtomicInteger();

    private Slots() {
    }

    private static DirtyLog.Writer logOn() {
        DirtyLog.Writer log = DirtyLog.Writer.detached((long) COUNT * Long.SIZE, 1);
        log.log().enable(DirtyTracking.WRITE_PROTECT);
        return log;
    }

    private static long buildTables() {
        long frame = MachineMemory.FRAME_SIZE;
        long x86Table = Pte.P | Pte.RW | Pte.US | Pte.A;
        long eptTable = Ept.RWX | Ept.A;
        X86.putLongVolatile(0, frame | x86Table);
        EPT.putLongVolatile(0, frame | eptTable);
        for (int i = 0; i < 2; i++) {
            X86.putLongVolatile(frame + i * 8L, (2 + i) * frame | x86Table);
            EPT.putLongVolatile(frame + i * 8L, (2 + i) * frame | eptTable);
        }
        for (int t = 0; t < COUNT / 64; t++) {
            long pde = 2 * frame + t * 8L;
            X86.putLongVolatile(pde, (TABLES + t) * frame | x86Table);
            EPT.putLongVolatile(pde, (TABLES + t) * frame | eptTable);
        }
        // The guest's tables (guest-physical pages 1 and 2 in host frames 1028 and 1029), mapped by the EPT.
        long guestPml4 = TABLE_FRAMES * frame;
        long guestPdpt = guestPml4 + frame;
        long eptPt0 = TABLES * frame;
        EPT.putLongVolatile(eptPt0 + 8, guestPml4 | Ept.RWX | Ept.MEMORY_TYPE_WB | Ept.A | Ept.D);
        EPT.putLongVolatile(eptPt0 + 16, guestPdpt | Ept.RWX | Ept.MEMORY_TYPE_WB | Ept.A | Ept.D);
        EPT.putLongVolatile(guestPml4, 2 * frame | x86Table);
        for (long g = 0; g < 2; g++) {
            EPT.putLongVolatile(guestPdpt + g * 8, (g << 30) | x86Table | Pte.D | Pte.PS);
        }
        return Ept.eptp(0, 4, true);
    }

    /** The next slot, with its bitmap words cleared. */
    static int take() {
        int slot = NEXT.getAndIncrement() & (COUNT - 1);
        BITMAP.harvestWord(word(slot));
        LOG.bitmap().harvestWord(logWord(slot));
        return slot;
    }

    /** Physical address of the slot's entry in {@link #ENTRIES}. */
    static long entry(int slot) {
        return (long) slot * LINE;
    }

    /** Index of the slot's word in {@link #LOG}'s bitmap. */
    static int logWord(int slot) {
        return slot;
    }

    /** Guest frame number of bit {@code bit} (0..63) of the slot's word in {@link #LOG}'s bitmap. */
    static long logFrame(int slot, int bit) {
        return ((long) logWord(slot) << 6) + bit;
    }

    /** Index of the slot's word in {@link #BITMAP}. */
    static int word(int slot) {
        return slot * (LINE / Long.BYTES);
    }

    /** Guest frame number of bit {@code bit} (0..63) of the slot's word in {@link #BITMAP}. */
    static long frame(int slot, int bit) {
        return ((long) word(slot) << 6) + bit;
    }

    /**
     * The harvest's first step, as {@code DirtyLog.harvest} takes every word ({@code DirtyBitmap.harvest}
     * calls {@code harvestWord}): takes the slot's word of {@link #LOG}; true when {@code gfn} was in it.
     */
    static boolean harvestTakes(int slot, long gfn) {
        long taken = LOG.bitmap().harvestWord(logWord(slot));
        return (taken & (1L << (gfn & 63))) != 0;
    }

    /** Physical address in {@link #X86} of the PTE that maps virtual page {@code 8 * slot}. */
    static long x86Leaf(int slot) {
        return ((TABLES + slot / 64L) << MachineMemory.FRAME_SHIFT) + (slot % 64) * 64L;
    }

    /** Physical address in {@link #EPT} of the EPT leaf that maps guest-physical page {@code 8 * slot}. */
    static long eptLeaf(int slot) {
        return x86Leaf(slot);
    }

    /**
     * The hardware: a write by a vCPU to page {@code 8 * slot} through the x86 tables, walked by the
     * mmu's own walker without caches (so no earlier trial's translation is reused); it sets A and D in
     * the leaf by CAS when the leaf permits the write. True when the write was permitted.
     */
    static boolean hardwareWriteX86(int slot) {
        return X86_WALKER.get().write(slot);
    }

    /** As {@link #hardwareWriteX86}, a 2D walk through the guest's tables and the EPT: sets A and D in the EPT leaf. */
    static boolean hardwareWriteEpt(int slot) {
        return EPT_WALKER.get().write(slot);
    }

    /** One thread's translation hardware over one of the hierarchies. */
    private static final class Walking {
        private final Mmu mmu;
        private final Translation out = new Translation();

        Walking(MachineMemory memory, long eptp) {
            mmu = new Mmu(memory);
            if (eptp != 0) {
                mmu.enter(1, eptp);
                mmu.movToCr3(GUEST_PML4_GPA);
            } else {
                mmu.movToCr3(0);
            }
        }

        boolean write(int slot) {
            long va = (8L * slot) << MachineMemory.FRAME_SHIFT;
            return mmu.walkUncached(va, Access.WRITE, out) == Fault.NONE;
        }
    }
}
