package io.vmpage.engine.paging.shadow;

import io.vmpage.engine.ExitReason;
import io.vmpage.engine.GuestFaultException;
import io.vmpage.engine.HostOutOfMemoryException;
import io.vmpage.engine.Internal;
import io.vmpage.engine.dirty.DirtySnapshot;
import io.vmpage.engine.dirty.DirtyTracking;
import io.vmpage.engine.dirty.WriteProtection;
import io.vmpage.engine.memory.FrameAllocator;
import io.vmpage.engine.memory.FrameDescriptor;
import io.vmpage.engine.memory.P2mEntry;
import io.vmpage.engine.memory.PhysicalMapWriter;
import io.vmpage.engine.paging.FrameSharing;
import io.vmpage.engine.paging.PagingBackend;
import io.vmpage.engine.paging.VcpuContext;
import io.vmpage.engine.paging.VmContext;
import io.vmpage.mmu.ControlRegisters;
import io.vmpage.mmu.Fault;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Pte;
import io.vmpage.mmu.Translation;
import java.util.concurrent.locks.ReentrantLock;
import org.agrona.collections.Long2LongHashMap;
import org.agrona.collections.Long2ObjectHashMap;
import org.agrona.collections.LongArrayList;
import org.agrona.collections.LongHashSet;

/**
 * Shadow paging, after KVM's shadow MMU (Documentation/virt/kvm/x86/mmu.rst): the vCPUs' hardware runs
 * 1D (no EPT) on shadow tables the engine builds in host frames, mapping guest-virtual addresses
 * straight to machine frames. The guest owns its page tables in guest-physical memory and believes the
 * hardware walks them; CR3 loads and INVLPG exit, and shadow misses arrive as #PF exits.
 *
 * <p><b>Shadow pages.</b> One host frame per (guest table gfn, level): an <i>indirect</i> shadow page
 * mirrors that guest table, and is shared by every path (and every root) that reaches the guest table,
 * so a cached root costs no rebuild when the guest switches back. Shadow non-leaf entries carry the
 * guest entry's own R/W, U/S and NX bits, so the hardware ANDs permissions along the shadow path exactly
 * as it would along the guest path, and a shadow page's content depends only on its guest table. Guest
 * 2 MiB / 1 GiB pages are shadowed by <i>direct</i> shadow pages of 4 KiB entries, keyed by (first gfn,
 * level, "writable and dirty", global): their leaves depend on nothing else, so sharing them is safe.
 * Shadow pages live until {@link #release()} (no per-page reclaim: nothing is ever freed while a vCPU
 * may hold a translation through it).
 *
 * <p><b>Write protection.</b> A guest frame with an indirect shadow page is mapped read-only by every
 * shadow leaf; the reverse map ({@link #rmap}: gfn to host addresses of shadow leaves that mapped it,
 * validated on use) write-protects existing leaves when a shadow page is created, followed by a remote
 * TLB flush. A guest write there faults, is emulated, and {@link #afterEmulatedWrite} zaps the shadow
 * entries derived from the guest entries written, in every shadow page of that gfn (the "zap the spte"
 * policy: the next access re-walks the guest entry; cached children stay, as they mirror their own guest
 * tables), then flushes this vCPU's TLB; other vCPUs drop theirs at the guest's own INVLPG shootdown,
 * as on bare metal (nothing is freed, so a stale entry reaches only this VM's frames). A shadow leaf is
 * writable only when the guest leaf is writable and already dirty, so the
 * first write faults and the engine sets the guest's D bit.
 *
 * <p><b>Dirty logging</b> (write protect and dirty ring; KVM's shadow MMU has no D-bit logging): enabling
 * it write-protects every shadow leaf through the reverse map; while it is on, a shadow leaf is installed
 * writable only for a write access, and the frame is logged right after ({@link WriteProtection}). The
 * guest A/D bits this engine sets in guest tables are logged as host writes; emulated writes are logged
 * by the vCPU.
 *
 * <p><b>Copy-on-write sharing</b> (what ESX did in 2002, on shadow tables): a guest frame of kind SHARED
 * in the p2m is mapped read-only by every shadow leaf; a write faults here, the engine gives the frame
 * a private copy ({@link #breakSharing}, zapping every shadow leaf of the frame so no alias keeps reading
 * the shared frame, then a remote flush) and the access retries. A merge write-protects the frame's
 * leaves through the reverse map and remembers the frame ({@link #protectedForSharing}); a writable leaf
 * installed or a host store since makes the merge give up. Guest page tables are never shared (the
 * engine sets A/D in them and emulates the guest's writes to them): a walk that meets a shared table
 * breaks its sharing first, and a frame the engine shadows is not merged.
 *
 * <p><b>Concurrency.</b> Shadow edits and guest walks take one lock per VM (KVM's mmu_lock); hardware
 * walks are lock-free. A vCPU waiting for the lock keeps serving its flush requests and IPIs, so a lock
 * holder waiting for a remote TLB flush cannot deadlock with it.
 *
 * <p><b>Limitation.</b> The hardware runs with the guest's own CR0 (CR0 writes do not exit here): with
 * CR0.WP = 0, supervisor writes ignore read-only shadow leaves, so D-bit tracking and write protection
 * of guest page tables need the guest to run with CR0.WP = 1.
 */
@Internal
public final class ShadowPaging implements PagingBackend, FrameSharing {
    private static final long MISSING = -1;
    private static final long NON_LEAF_FLAGS = Pte.P | Pte.A;
    private static final int KEY_DIRECT = 1 << 4;
    private static final int KEY_WRITABLE = 1 << 5;
    private static final int KEY_GLOBAL = 1 << 6;

    private final VmContext vm;
    private final MachineMemory memory;
    private final ReentrantLock lock = new ReentrantLock();
    private final ShadowGuestWalk walk;
    /** Shadow page key (see {@link #indirectKey}, {@link #directKey}) to host-physical address of its frame. */
    private final Long2LongHashMap pages = new Long2LongHashMap(MISSING);
    /** Reverse map: guest frame to host addresses of shadow leaves that mapped it (possibly stale: validate). */
    private final Long2ObjectHashMap<LongArrayList> rmap = new Long2ObjectHashMap<>();
    /** Every shadow table frame, for {@link #release()}. */
    private final LongArrayList frames = new LongArrayList();
    /** Per vCPU: the guest's CR3 (without the no-flush bit), -1 before the first load. Owner threads. */
    private final long[] guestCr3;
    private final boolean[] hasCr3;
    /** Per vCPU: the guest frame its last shadow fill found not here, -1 if none. Owner threads. */
    private final long[] absentGfn;
    /** Guest walks started (lock held): detects a walk nested in an IPI served during a remote flush. */
    private long walks;
    /** Per vCPU: the shared guest frame its last fill must give a private copy before it retries, -1 if none. Owner threads. */
    private final long[] cowGfn;
    private final PhysicalMapWriter p2m;
    /**
     * Guest frames write-protected for a merge ({@link #writeProtectForSharing}) and not written since: a
     * writable leaf or a host store removes one, and {@link #mapShared} maps only a frame still here. Lock held.
     */
    private final LongHashSet protectedForSharing = new LongHashSet();
    /** {@link #protectedForSharing}'s size: written under the lock, read by host stores without it (volatile). */
    private volatile int merging;

    public ShadowPaging(VmContext vm) {
        this.vm = vm;
        this.memory = vm.memory();
        this.walk = new ShadowGuestWalk(vm, vm.config().mmu().maxPhysAddrBits());
        this.guestCr3 = new long[vm.config().vcpus()];
        this.hasCr3 = new boolean[vm.config().vcpus()];
        this.absentGfn = new long[vm.config().vcpus()];
        this.cowGfn = new long[vm.config().vcpus()];
        this.p2m = vm.physicalMapWriter();
    }

    // ------------------------------------------------------------------ keys and shadow pages

    static long indirectKey(long gfn, int level) {
        return (gfn << 8) | level;
    }

    static long directKey(long firstGfn, int level, boolean writable, boolean global) {
        return (firstGfn << 8) | KEY_DIRECT | (writable ? KEY_WRITABLE : 0) | (global ? KEY_GLOBAL : 0) | level;
    }

    /** Lock held. The shadow page for {@code key}, created (zeroed) when missing; {@code created[0]} tells. */
    private long page(long key, boolean[] created) {
        assert lock.isHeldByCurrentThread() : "the mmu lock must be held";
        long hpa = pages.get(key);
        if (hpa != MISSING) {
            return hpa;
        }
        long frame = vm.allocateTableFrame();
        frames.addLong(frame);
        hpa = frame << MachineMemory.FRAME_SHIFT;
        pages.put(key, hpa);
        if ((key & KEY_DIRECT) == 0) {
            created[0] |= writeProtect(key >>> 8);
        }
        return hpa;
    }

    /** Lock held. Whether guest frame {@code gfn} holds a guest table the engine shadows. */
    private boolean shadowed(long gfn) {
        assert lock.isHeldByCurrentThread() : "the mmu lock must be held";
        for (int level = Pte.LEVEL_PT; level <= Pte.LEVEL_PML5; level++) {
            if (pages.get(indirectKey(gfn, level)) != MISSING) {
                return true;
            }
        }
        return false;
    }

    /** Lock held. Removes write access from every shadow leaf mapping {@code gfn}; true when one had it. */
    private boolean writeProtect(long gfn) {
        assert lock.isHeldByCurrentThread() : "the mmu lock must be held";
        LongArrayList leaves = rmap.get(gfn);
        long mfn = vm.physicalMap().contains(gfn) ? vm.physicalMap().machineFrame(gfn) : -1;
        if (leaves == null || mfn < 0) {
            return false;
        }
        boolean any = false;
        for (int i = 0; i < leaves.size(); i++) { // records may be stale: the leaf must still map the frame
            any |= ShadowLeaf.writeProtect(memory, leaves.getLong(i), mfn, vm.dirtyLog());
        }
        return any;
    }

    /** Lock held. Records that the shadow leaf at {@code leafHpa} maps {@code gfn}, compacting stale records. */
    private void rmapAdd(long gfn, long mfn, long leafHpa) {
        assert lock.isHeldByCurrentThread() : "the mmu lock must be held";
        LongArrayList leaves = rmap.get(gfn);
        if (leaves == null) {
            leaves = new LongArrayList(4, MISSING);
            rmap.put(gfn, leaves);
        }
        for (int i = 0; i < leaves.size(); i++) {
            if (leaves.getLong(i) == leafHpa) {
                return;
            }
        }
        if (leaves.size() >= 16 && Integer.bitCount(leaves.size()) == 1) { // now and then: drop stale records
            long target = mfn << MachineMemory.FRAME_SHIFT;
            for (int i = leaves.size() - 1; i >= 0; i--) {
                long e = memory.getLongVolatile(leaves.getLong(i));
                if ((e & Pte.P) == 0 || (e & Pte.ADDRESS_MASK) != target) {
                    leaves.fastUnorderedRemove(i);
                }
            }
        }
        leaves.addLong(leafHpa);
    }

    /**
     * Lock held. Every change of a shadow leaf: {@link ShadowLeaf#change} (CAS, logging a write grant),
     * on behalf of vCPU {@code vcpu} (-1: none) for guest frame {@code gfn} (-1 when no write access is
     * granted). Callers flush TLBs as the result asks (a remote flush after write protection, the local
     * flush of an INVLPG or emulated write).
     */
    private int changeLeaf(long at, long old, long updated, int vcpu, long gfn) {
        assert lock.isHeldByCurrentThread() : "the mmu lock must be held";
        return ShadowLeaf.change(memory, at, old, updated, vm.dirtyLog(), vcpu, gfn);
    }

    // ------------------------------------------------------------------ locking

    /** Takes the mmu lock; while waiting, the calling vCPU keeps serving flushes and IPIs sent to it. */
    private void lock() {
        vm.lockServingRequests(lock);
    }

    // ------------------------------------------------------------------ backend

    @Override
    public void attach(VcpuContext vcpu) {
        vcpu.mmu().enter(vcpu.vpid(), 0); // 1D on shadow tables; CR3 comes when the guest loads one
    }

    /**
     * Write protection of guest page-table pages (and the first-write trap that sets guest D) relies
     * on the hardware honouring read-only shadow leaves in supervisor mode, i.e. CR0.WP = 1. KVM keeps
     * the hardware's WP set and emulates a guest running with WP = 0; this model does not emulate that
     * case and refuses to clear WP (#GP). Guests such as Linux always run with WP set.
     */
    @Override
    public void setCr0(VcpuContext vcpu, long value) {
        if ((value & ControlRegisters.CR0_WP) == 0) {
            throw new GuestFaultException(Fault.GENERAL_PROTECTION, 0, 0);
        }
        vcpu.mmu().setCr0(value);
    }

    @Override
    public void loadCr3(VcpuContext vcpu, long cr3) {
        vcpu.countExit(ExitReason.CR3_LOAD);
        ControlRegisters regs = vcpu.mmu().registers();
        boolean pcide = regs.pcide();
        long physMask = (1L << vm.config().mmu().maxPhysAddrBits()) - 1;
        if ((cr3 & ~physMask & ~(pcide ? ControlRegisters.CR3_NO_FLUSH : 0)) != 0) {
            throw new IllegalArgumentException("MOV to CR3 of " + "0x" + Long.toHexString(cr3)
                + " sets reserved bits (#GP): bits above MAXPHYADDR " + vm.config().mmu().maxPhysAddrBits() + " must be clear");
        }
        long value = cr3 & ~ControlRegisters.CR3_NO_FLUSH;
        long root;
        lock();
        try {
            root = root(value, regs.levels());
        } finally {
            lock.unlock();
        }
        guestCr3[vcpu.index()] = value;
        hasCr3[vcpu.index()] = true;
        vcpu.mmu().movToCr3(hardwareCr3(root, cr3, pcide));
    }

    private static long hardwareCr3(long rootHpa, long guestCr3, boolean pcide) {
        long low = pcide ? guestCr3 & (ControlRegisters.CR3_PCID_MASK | ControlRegisters.CR3_NO_FLUSH) : guestCr3 & (Pte.PWT | Pte.PCD);
        return rootHpa | low;
    }

    /** Lock held. The shadow root for guest CR3 {@code cr3} with {@code levels} levels (cached per guest root). */
    private long root(long cr3, int levels) {
        assert lock.isHeldByCurrentThread() : "the mmu lock must be held";
        boolean[] flush = {false};
        long root = page(indirectKey((cr3 & walk.addressMask) >>> MachineMemory.FRAME_SHIFT, levels), flush);
        if (flush[0]) {
            vm.flushRemoteTlbs();
        }
        return root;
    }

    /** The guest's own CR3 (the hardware runs on the shadow root). */
    @Override
    public long guestCr3(VcpuContext vcpu) {
        return hasCr3[vcpu.index()] ? guestCr3[vcpu.index()] : -1;
    }

    @Override
    public void invlpg(VcpuContext vcpu, long va) {
        vcpu.countExit(ExitReason.INVLPG);
        long root = vcpu.mmu().registers().tableBase();
        if (hasCr3[vcpu.index()] && root != 0) {
            lock();
            try {
                zapLeaf(root, vcpu.mmu().registers().levels(), va);
            } finally {
                lock.unlock();
            }
        }
        vcpu.mmu().invlpg(va);
    }

    /** Lock held. Clears the shadow leaf for {@code va} under shadow root {@code root}, if the path reaches one. */
    private void zapLeaf(long root, int levels, long va) {
        assert lock.isHeldByCurrentThread() : "the mmu lock must be held";
        long table = root;
        for (int level = levels; level >= Pte.LEVEL_PT; level--) {
            long at = table + ((long) Pte.index(va, level) << 3);
            long e = memory.getLongVolatile(at);
            if ((e & Pte.P) == 0) {
                return;
            }
            if (level == Pte.LEVEL_PT) {
                while (ShadowLeaf.present(e) && changeLeaf(at, e, 0, -1, -1) == ShadowLeaf.RACED) {
                    e = memory.getLongVolatile(at);
                }
                return;
            }
            table = e & Pte.ADDRESS_MASK;
        }
    }

    @Override
    public int handleFault(VcpuContext vcpu, Translation t) {
        vcpu.countExit(ExitReason.PAGE_FAULT);
        if (t.fault != Fault.PAGE_FAULT) {
            throw new IllegalStateException("unexpected " + Fault.name(t.fault) + " on shadow tables of VM " + vm.id());
        }
        int index = vcpu.index();
        if (!hasCr3[index]) {
            vcpu.countExit(ExitReason.PAGE_FAULT_INJECTED); // no guest tables: the fault is the guest's
            return INJECT;
        }
        ControlRegisters regs = vcpu.mmu().registers();
        long va = t.va;
        int access = t.access;
        absentGfn[index] = -1;
        cowGfn[index] = -1;
        int outcome = fillShadow(vcpu, t, regs, va, access, index);
        if (absentGfn[index] >= 0) {
            // A frame that is not here (post-copy, swap) is brought in without the mmu lock, as KVM
            // faults the pfn in before it takes mmu_lock: other vCPUs keep running meanwhile.
            vm.populate(absentGfn[index]);
        }
        if (cowGfn[index] >= 0) { // a write to a shared frame, or a walk through a shared table: copy, then retry
            vcpu.countExit(ExitReason.COPY_ON_WRITE);
            breakSharing(vcpu, cowGfn[index]);
        }
        return outcome;
    }

    private int fillShadow(VcpuContext vcpu, Translation t, ControlRegisters regs, long va, int access, int index) {
        lock();
        try {
            walks++;
            int fault = walk.walk(regs, guestCr3[index], va, access);
            if (fault == ShadowGuestWalk.ABSENT) {
                absentGfn[index] = walk.absentGfn; // brought in by handleFault, without the lock
                return RETRY;
            }
            if (fault == ShadowGuestWalk.SHARED_TABLE) {
                cowGfn[index] = walk.sharedGfn; // given a private copy by handleFault, without the lock
                return RETRY;
            }
            if (fault == Fault.GENERAL_PROTECTION) {
                throw new GuestFaultException(Fault.GENERAL_PROTECTION, 0, va);
            }
            if (fault != Fault.NONE) {
                vcpu.countExit(ExitReason.PAGE_FAULT_INJECTED);
                t.errorCode = walk.errorCode;
                t.faultAddress = va;
                return INJECT;
            }
            long gfn = walk.gpa >>> MachineMemory.FRAME_SHIFT;
            if (walk.absent(gfn)) {
                absentGfn[index] = gfn;
                return RETRY;
            }
            long mfn = vm.populate(gfn); // MACHINE_CHECK beyond guest memory: never anyone else's frame
            boolean shared = walk.shared(gfn);
            if (shared && io.vmpage.mmu.Access.isWrite(access)) {
                cowGfn[index] = gfn; // copy-on-write, by handleFault without the lock
                return RETRY;
            }
            boolean[] flush = {false};
            long root = page(indirectKey(walk.tableGfn[walk.levels], walk.levels), flush);
            long shadowLeaf = buildPath(root, va, regs.nxe(), flush);
            if (flush[0]) {
                long generation = ++walks;
                vm.flushRemoteTlbs(); // the new shadow pages' guest tables are read-only everywhere now
                if (walks != generation) {
                    return RETRY; // an IPI served while waiting faulted on this vCPU and reused the walk state
                }
            }
            if (!walk.unchanged()) {
                return RETRY; // the guest changed an entry before it was write-protected: walk again
            }
            boolean protectedTable = shadowed(gfn);
            boolean write = io.vmpage.mmu.Access.isWrite(access);
            boolean wasReadOnly = (memory.getLongVolatile(shadowLeaf) & (Pte.P | Pte.RW)) == Pte.P;
            if (installLeaf(vcpu, shadowLeaf, gfn, mfn, protectedTable || shared, regs.nxe(), write) && wasReadOnly && (vm.dirtyLog().method() != null)) {
                vcpu.countExit(ExitReason.DIRTY_LOG);
            }
            long hwRoot = regs.tableBase();
            if (hwRoot != root) { // e.g. CR4.LA57 changed since the CR3 load: run on the right root
                vcpu.mmu().movToCr3(hardwareCr3(root, regs.cr3() | (regs.pcide() ? ControlRegisters.CR3_NO_FLUSH : 0), regs.pcide()));
            }
            vcpu.mmu().invlpg(va); // drop paging-structure-cache entries that may predate the path just built
            if (write && protectedTable) { // never a shared frame: writes to those break sharing above
                vcpu.countExit(ExitReason.WRITE_PROTECT);
                long offset = walk.gpa & MachineMemory.FRAME_OFFSET_MASK;
                vcpu.emulateAt((mfn << MachineMemory.FRAME_SHIFT) | offset, walk.gpa);
                return EMULATE;
            }
            return RETRY;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Lock held. Writes the shadow path for {@code va} from the last guest walk, creating shadow pages on
     * the way, and returns the host address of the 4 KiB shadow leaf slot to fill. Leaf permissions of a
     * guest large page go in the entry pointing at its direct shadow page.
     */
    private long buildPath(long root, long va, boolean nxe, boolean[] flush) {
        assert lock.isHeldByCurrentThread() : "the mmu lock must be held";
        long table = root;
        int leafLevel = walk.leafLevel;
        for (int level = walk.levels; level > leafLevel; level--) {
            long ge = walk.entry[level];
            long child = page(indirectKey(walk.tableGfn[level - 1], level - 1), flush);
            setEntry(table, va, level, child | NON_LEAF_FLAGS | permissions(ge, nxe));
            table = child;
        }
        if (leafLevel == Pte.LEVEL_PT) {
            return table + ((long) Pte.index(va, Pte.LEVEL_PT) << 3);
        }
        long ge = walk.entry[leafLevel];
        int shift = Pte.levelShift(leafLevel);
        long firstGfn = (ge & walk.addressMask & ~((1L << shift) - 1)) >>> MachineMemory.FRAME_SHIFT;
        boolean writable = (ge & Pte.RW) != 0 && (ge & Pte.D) != 0;
        boolean global = (ge & Pte.G) != 0;
        long direct = page(directKey(firstGfn, leafLevel - 1, writable, global), flush);
        setEntry(table, va, leafLevel, direct | NON_LEAF_FLAGS | permissions(ge, nxe));
        table = direct;
        for (int level = leafLevel - 1; level > Pte.LEVEL_PT; level--) { // a 1 GiB page: one more direct level
            long first = firstGfn + ((long) Pte.index(va, level) << (9 * (level - 1)));
            long child = page(directKey(first, level - 1, writable, global), flush);
            setEntry(table, va, level, child | NON_LEAF_FLAGS | Pte.RW | Pte.US);
            table = child;
        }
        return table + ((long) Pte.index(va, Pte.LEVEL_PT) << 3);
    }

    private static long permissions(long guestEntry, boolean nxe) {
        return (guestEntry & (Pte.RW | Pte.US)) | (nxe ? guestEntry & Pte.NX : 0);
    }

    private void setEntry(long table, long va, int level, long value) {
        long at = table + ((long) Pte.index(va, level) << 3);
        if (memory.getLongVolatile(at) != value) {
            memory.putLongRelease(at, value);
        }
    }

    /**
     * Lock held. Fills the 4 KiB shadow leaf at {@code at} for guest frame {@code gfn} (machine frame
     * {@code mfn}); returns whether the leaf is writable. While the dirty log is on, only a write access
     * installs a writable leaf.
     */
    private boolean installLeaf(VcpuContext vcpu, long at, long gfn, long mfn, boolean protectedTable, boolean nxe, boolean write) {
        assert lock.isHeldByCurrentThread() : "the mmu lock must be held";
        long value = (mfn << MachineMemory.FRAME_SHIFT) | Pte.P | Pte.A;
        int leafLevel = walk.leafLevel;
        long ge = walk.entry[leafLevel];
        boolean guestWritableAndDirty = (ge & Pte.RW) != 0 && (ge & Pte.D) != 0;
        boolean writable = guestWritableAndDirty && !protectedTable && (write || !(vm.dirtyLog().method() != null));
        if (writable) {
            value |= Pte.RW | Pte.D;
            if (merging > 0) {
                forgetProtected(gfn); // written since a merge protected it: that merge gives up
            }
        }
        value |= ge & Pte.G;
        if (leafLevel == Pte.LEVEL_PT) {
            value |= (ge & Pte.US) | (nxe ? ge & Pte.NX : 0);
        } else {
            value |= Pte.US; // the guest's U/S and NX of a large page are in the entry above the direct page
        }
        rmapAdd(gfn, mfn, at);
        while (changeLeaf(at, memory.getLongVolatile(at), value, vcpu.index(), gfn) == ShadowLeaf.RACED) {
            // the hardware set A in the old entry meanwhile: the lock keeps every other writer out
        }
        return writable;
    }

    @Override
    public void startDirtyLog(DirtyTracking method) {
        lock();
        try {
            for (Long2ObjectHashMap<LongArrayList>.KeyIterator it = rmap.keySet().iterator(); it.hasNext(); ) {
                writeProtect(it.nextLong());
            }
        } finally {
            lock.unlock();
        }
    }

    @Override
    public void writeProtect(DirtySnapshot harvested) {
        lock();
        try {
            for (long gfn = harvested.next(0); gfn >= 0; gfn = harvested.next(gfn + 1)) {
                writeProtect(gfn);
            }
        } finally {
            lock.unlock();
        }
    }

    @Override
    public void afterEmulatedWrite(VcpuContext vcpu, long gpa, int length) {
        if (length <= 0) {
            return;
        }
        long gfn = gpa >>> MachineMemory.FRAME_SHIFT;
        int first = (int) ((gpa & MachineMemory.FRAME_OFFSET_MASK) >>> 3);
        int last = (int) (((gpa + length - 1) & MachineMemory.FRAME_OFFSET_MASK) >>> 3);
        if (((gpa + length - 1) >>> MachineMemory.FRAME_SHIFT) != gfn) {
            last = 511;
        }
        boolean any = false;
        lock();
        try {
            for (int level = Pte.LEVEL_PT; level <= Pte.LEVEL_PML5; level++) {
                long page = pages.get(indirectKey(gfn, level));
                if (page == MISSING) {
                    continue;
                }
                for (int i = first; i <= last; i++) { // the next access re-walks the changed guest entry
                    long at = page + ((long) i << 3);
                    long e = memory.getLongVolatile(at);
                    if (level == Pte.LEVEL_PT) {
                        while (e != 0 && changeLeaf(at, e, 0, -1, -1) == ShadowLeaf.RACED) {
                            e = memory.getLongVolatile(at);
                        }
                        any |= e != 0;
                    } else if (e != 0) {
                        memory.putLongRelease(at, 0); // a non-leaf entry: the hardware sets only A in it, and A is
                        any = true;                   // set again by the next walk
                    }
                }
            }
            if (any) {
                // This vCPU sees the new entry at once. Other vCPUs may keep a cached translation until the
                // guest's own INVLPG / shootdown, as on bare metal: no shadow table or machine frame is
                // freed here, so a stale entry can only reach this VM's own frames.
                vcpu.mmu().flushAll();
            }
        } finally {
            lock.unlock();
        }
    }

    // ------------------------------------------------------------------ copy-on-write sharing

    @Override
    public FrameSharing sharing() {
        return this;
    }

    /**
     * Merge, first step: write-protects every shadow leaf of {@code gfn} (through the reverse map) and
     * remembers it; the caller flushes the VM's TLBs before it compares. -1 when not populated, or when
     * the frame holds a guest table the engine shadows (never shared).
     */
    @Override
    public long writeProtectForSharing(long gfn) {
        lock();
        try {
            long e = vm.physicalMap().entry(gfn);
            long mfn = P2mEntry.isPresent(e) ? P2mEntry.frame(e) : -1;
            if (mfn < 0 || P2mEntry.kind(e) == P2mEntry.SHARED) {
                return mfn; // shared already: read-only everywhere
            }
            if (shadowed(gfn)) {
                return -1;
            }
            writeProtect(gfn);
            protectedForSharing.add(gfn);
            merging = protectedForSharing.size();
            return mfn;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Merge, second step: {@code gfn}, backed by {@code mfn} and not written since it was protected, maps
     * {@code shared} from now on (the first mapper's own frame becomes the shared one). Its shadow leaves
     * of {@code mfn} are zapped when the frame changes (the next access maps the shared one read-only).
     * False, nothing changed, when a write or a remap got there first. The caller flushes the VM's TLBs.
     */
    @Override
    public boolean mapShared(long gfn, long mfn, long shared) {
        FrameAllocator frames = vm.frames();
        lock();
        try {
            long e = vm.physicalMap().entry(gfn);
            boolean alreadyShared = P2mEntry.kind(e) == P2mEntry.SHARED;
            if (!P2mEntry.isPresent(e) || P2mEntry.frame(e) != mfn || (!alreadyShared && !protectedForSharing.contains(gfn))
                || shadowed(gfn)) {
                return false;
            }
            if (shared == mfn) {
                if (!alreadyShared) {
                    frames.compareAndSetDescriptor(mfn, frames.descriptor(mfn), FrameDescriptor.inUse(FrameDescriptor.TYPE_SHARED, 0, 1));
                    vm.privateFrameRemoved();
                    vm.sharedFrameCreated();
                }
            } else {
                zapLeaves(gfn, mfn);
            }
            replaceEntry(gfn, e, P2mEntry.sharedFrame(shared));
            forgetProtected(gfn);
            return true;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Gives {@code gfn} a private frame again (a write by a vCPU, or the host when {@code vcpu} is null):
     * the last mapper takes the shared frame over, others get a copy; every shadow leaf of the shared
     * frame is zapped and every vCPU flushed before this VM's reference to it goes. Returns the private
     * frame; -1 when the frame is not populated.
     *
     * @throws HostOutOfMemoryException when no frame is left for the copy
     */
    @Override
    public long breakSharing(VcpuContext vcpu, long gfn) {
        FrameAllocator frames = vm.frames();
        long shared;
        long mine;
        boolean copied = false;
        lock();
        try {
            long entry = vm.physicalMap().entry(gfn);
            shared = P2mEntry.isPresent(entry) ? P2mEntry.frame(entry) : -1;
            if (shared < 0 || P2mEntry.kind(entry) != P2mEntry.SHARED) {
                return shared; // not populated, or private already
            }
            mine = FrameSharing.privateFrame(vm, shared, gfn); // taken over, its read-only leaves stay right
            copied = mine != shared;
            if (copied) {
                zapLeaves(gfn, shared); // no alias of this VM keeps reading the shared frame
            }
            frames.setGuestFrame(mine, gfn);
            replaceEntry(gfn, entry, P2mEntry.privateFrame(mine));
            vm.privateFrameAdded();
            vm.copyOnWriteBroken();
        } finally {
            lock.unlock();
        }
        if (copied) {
            vm.flushRemoteTlbs(); // no vCPU reads the shared frame through this VM any more...
            vm.awaitHostAccesses(); // ...nor a host access that looked it up...
            vm.dropSharedReference(shared); // ...before this VM's reference goes (maybe the last)
        }
        return mine;
    }

    /**
     * Inside a host store to {@code gfn}, before it writes: false when the frame is shared (the caller
     * breaks sharing and tries again); otherwise a merge that protected it gives up.
     */
    @Override
    public boolean beforeHostStore(long gfn) {
        long e = vm.physicalMap().entry(gfn);
        if (P2mEntry.kind(e) == P2mEntry.SHARED && P2mEntry.isPresent(e)) {
            return false;
        }
        if (merging == 0) {
            return true; // no merge protects a frame of this VM: nothing to tell
        }
        lock();
        try {
            e = vm.physicalMap().entry(gfn);
            if (P2mEntry.kind(e) == P2mEntry.SHARED && P2mEntry.isPresent(e)) {
                return false;
            }
            forgetProtected(gfn);
            return true;
        } finally {
            lock.unlock();
        }
    }

    // ------------------------------------------------------------------ discard

    /**
     * Unhooks guest frame {@code gfn} (a balloon's page, a discard, a swap-out): its p2m entry becomes
     * {@code replacement} and every shadow leaf mapping its frame is zapped; the caller flushes and waits
     * for the host accesses in flight before the frame is reused. A frame holding a guest table the engine
     * shadows is kept (false): its shadow pages mirror it, and a guest never hands a live page table to
     * its balloon.
     */
    @Override
    public boolean unmap(long gfn, long mfn, long replacement) {
        lock();
        try {
            if (shadowed(gfn) || !p2m.remove(gfn, mfn, replacement)) {
                return false;
            }
            zapLeaves(gfn, mfn);
            forgetProtected(gfn);
            return true;
        } finally {
            lock.unlock();
        }
    }

    /** Lock held. {@code gfn} is no longer protected for a merge or a swap-out (written, mapped or unmapped). */
    private void forgetProtected(long gfn) {
        assert lock.isHeldByCurrentThread() : "the mmu lock must be held";
        if (protectedForSharing.remove(gfn)) {
            merging = protectedForSharing.size();
        }
    }

    /** Lock held. Zaps every shadow leaf that maps guest frame {@code gfn} to machine frame {@code mfn}; whether one was present. */
    private boolean zapLeaves(long gfn, long mfn) {
        assert lock.isHeldByCurrentThread() : "the mmu lock must be held";
        LongArrayList leaves = rmap.get(gfn);
        if (leaves == null) {
            return false;
        }
        long target = mfn << MachineMemory.FRAME_SHIFT;
        boolean any = false;
        for (int i = 0; i < leaves.size(); i++) {
            long at = leaves.getLong(i);
            long e = memory.getLongVolatile(at);
            any |= (e & Pte.P) != 0 && (e & Pte.ADDRESS_MASK) == target;
            while ((e & Pte.P) != 0 && (e & Pte.ADDRESS_MASK) == target && changeLeaf(at, e, 0, -1, -1) == ShadowLeaf.RACED) {
                e = memory.getLongVolatile(at); // the hardware set A meanwhile
            }
        }
        return any;
    }

    // ------------------------------------------------------------------ working-set sampling

    @Override
    public boolean unmapForSampling(long gfn) {
        lock();
        try {
            long mfn = vm.physicalMap().machineFrame(gfn);
            return mfn >= 0 && !shadowed(gfn) && zapLeaves(gfn, mfn);
        } finally {
            lock.unlock();
        }
    }

    @Override
    public boolean mapped(long gfn) {
        lock();
        try {
            long mfn = vm.physicalMap().machineFrame(gfn);
            LongArrayList leaves = rmap.get(gfn);
            if (mfn < 0 || leaves == null) {
                return false;
            }
            long target = mfn << MachineMemory.FRAME_SHIFT;
            for (int i = 0; i < leaves.size(); i++) {
                long e = memory.getLongVolatile(leaves.getLong(i));
                if ((e & Pte.P) != 0 && (e & Pte.ADDRESS_MASK) == target) {
                    return true;
                }
            }
            return false;
        } finally {
            lock.unlock();
        }
    }

    /** Lock held. The p2m entry of a present frame changes only under the lock, so the CAS cannot lose. */
    private void replaceEntry(long gfn, long expected, long update) {
        assert lock.isHeldByCurrentThread() : "the mmu lock must be held";
        if (!p2m.compareAndSet(gfn, expected, update)) {
            throw new IllegalStateException("guest frame 0x" + Long.toHexString(gfn) + " of VM " + vm.id()
                + " changed under the mmu lock: expected " + P2mEntry.describe(expected) + ", found "
                + P2mEntry.describe(vm.physicalMap().entry(gfn)));
        }
    }

    @Override
    public void release() {
        lock();
        try {
            for (int i = 0; i < frames.size(); i++) {
                vm.frames().free(frames.getLong(i));
            }
            frames.clear();
            pages.clear();
            rmap.clear();
        } finally {
            lock.unlock();
        }
    }
}
