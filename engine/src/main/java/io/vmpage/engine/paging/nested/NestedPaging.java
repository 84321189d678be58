package io.vmpage.engine.paging.nested;

import io.vmpage.engine.ExitReason;
import io.vmpage.engine.HostOutOfMemoryException;
import io.vmpage.engine.Internal;
import io.vmpage.engine.dirty.DirtyBitmap;
import io.vmpage.engine.dirty.DirtyLog;
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
import io.vmpage.mmu.Ept;
import io.vmpage.mmu.Fault;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.PageTables;
import io.vmpage.mmu.Pte;
import io.vmpage.mmu.Translation;
import java.util.ArrayList;
import java.util.List;

/**
 * Hardware-assisted paging: the engine keeps one EPT per VM (host-physical tables in frames charged to
 * the VM) and fills it on EPT violations, populating guest frames on first touch, as KVM's TDP MMU does.
 * The guest's own page tables, CR3 loads, INVLPG and #PFs never exit.
 *
 * <p>The EPT maps only frames this VM owns, so whatever the guest writes into its own tables, every
 * guest-physical address it can produce lands in its own memory or faults.
 *
 * <p><b>Leaf changes.</b> Every EPT leaf changes through {@link EptLeaf#change}, which derives the
 * dirty-log marks and the need for a TLB flush from the old and the new value (KVM's
 * {@code handle_changed_spte}): fills, write grants, write protection, D-bit sweeps, merges,
 * copy-on-write breaks and discards.
 *
 * <p><b>Dirty logging</b> (KVM's TDP MMU): write protection clears W in the EPT leaves, and a write
 * violation on a present, readable leaf is served lock-free by a CAS that sets W back (KVM's fast page
 * fault) and then logs the frame ({@link WriteProtection}); a fill while logging maps read-only unless
 * the access is a write. Dirty bits use the EPT D bits, which the hardware sets because every EPTP this
 * engine builds enables EPT A/D (bit 6); under them a write grant is not logged, the D bit records it.
 *
 * <p><b>Page sharing</b> ({@link FrameSharing}): a shared frame's leaves are read-only and
 * {@link EptLeaf#COW}, and its p2m entries are of kind {@link P2mEntry#SHARED}; both change under
 * {@link #lock}.
 *
 * <p>Concurrency: EPT fills and removals take {@link #lock}; walks by every vCPU's hardware read the
 * entries lock-free (release stores pair with the walkers' volatile loads); W and D bits of present
 * leaves change only by CAS (the hardware sets A/D by CAS too).
 */
@Internal
public final class NestedPaging implements PagingBackend, FrameSharing {
    private final VmContext vm;
    private final MachineMemory memory;
    private final DirtyLog.Writer log;
    private final PhysicalMapWriter p2m;
    private final PageTables ept;
    private final long eptp;
    private final Object lock = new Object();
    /** Every EPT table frame, for {@link #release}. Guarded by {@link #lock}. */
    private final List<Long> tableFrames = new ArrayList<>();

    public NestedPaging(VmContext vm) {
        this.vm = vm;
        this.memory = vm.memory();
        this.log = vm.dirtyLog();
        this.p2m = vm.physicalMapWriter();
        this.ept = new PageTables(memory, PageTables.Format.EPT, 4, this::newTable);
        this.eptp = Ept.eptp(ept.root(), 4, true);
    }

    private long newTable() {
        long frame = vm.allocateTableFrame();
        tableFrames.add(frame);
        return frame << MachineMemory.FRAME_SHIFT;
    }

    @Override
    public void attach(VcpuContext vcpu) {
        vcpu.mmu().enter(vcpu.vpid(), eptp);
    }

    @Override
    public void loadCr3(VcpuContext vcpu, long cr3) {
        vcpu.mmu().movToCr3(cr3); // no exit: EPT leaves CR3 to the guest
    }

    @Override
    public void invlpg(VcpuContext vcpu, long va) {
        vcpu.mmu().invlpg(va);
    }

    @Override
    public int handleFault(VcpuContext vcpu, Translation t) {
        if (t.fault == Fault.PAGE_FAULT) {
            return INJECT; // delivered straight to the guest: with EPT, #PF does not exit
        }
        if (t.fault == Fault.EPT_MISCONFIG) {
            vcpu.countExit(ExitReason.EPT_MISCONFIG);
            throw new IllegalStateException("EPT misconfiguration at guest-physical 0x" + Long.toHexString(t.faultAddress)
                + " in VM " + vm.id() + ": the engine's EPT is corrupt");
        }
        long gfn = t.faultAddress >>> MachineMemory.FRAME_SHIFT;
        boolean write = (t.qualification & Fault.QUAL_WRITE) != 0;
        if (write && grantWrite(vcpu, gfn)) {
            return RETRY;
        }
        vcpu.countExit(ExitReason.EPT_VIOLATION);
        long mfn = vm.populate(gfn); // MACHINE_CHECK to the guest beyond its memory
        synchronized (lock) {
            long entry = vm.physicalMap().entry(gfn);
            if (P2mEntry.frame(entry) != mfn) {
                return RETRY; // discarded meanwhile: fault again and populate afresh
            }
            long slot = ept.leafSlot(gfn << MachineMemory.FRAME_SHIFT);
            long e = memory.getLongVolatile(slot);
            if (!EptLeaf.present(e)) {
                // A log enabled after this reads as off sweeps this leaf under the lock afterwards.
                DirtyTracking logging = log.method();
                boolean shared = P2mEntry.kind(entry) == P2mEntry.SHARED;
                boolean writable = !shared && (write || logging == null || logging == DirtyTracking.DIRTY_BITS);
                long flags = shared ? EptLeaf.SHARED_FLAGS : writable ? EptLeaf.WRITABLE_FLAGS : EptLeaf.READ_ONLY_FLAGS;
                // Nothing else writes an empty leaf (fills hold the lock, the hardware sets A/D in present ones only).
                EptLeaf.change(memory, slot, e, EptLeaf.of(mfn, flags), log, vcpu.index(), gfn, false);
            }
        }
        return RETRY;
    }

    /**
     * A write violation on a present, readable leaf without W: a shared frame to copy, or write protection
     * by dirty logging or page sharing. Sets W by CAS and then logs the write; false when the leaf is not
     * such a leaf.
     */
    private boolean grantWrite(VcpuContext vcpu, long gfn) {
        long leafAddress = ept.leafAddress(gfn << MachineMemory.FRAME_SHIFT);
        if (leafAddress < 0) {
            return false;
        }
        while (true) {
            long e = ept.read(leafAddress);
            if ((e & Ept.R) == 0) {
                return false;
            }
            if (EptLeaf.writable(e)) {
                return true; // another vCPU granted it (and logged it) meanwhile
            }
            if ((e & EptLeaf.COW) != 0) {
                vcpu.countExit(ExitReason.COPY_ON_WRITE);
                breakSharing(vcpu, gfn);
                return true;
            }
            if (EptLeaf.change(memory, leafAddress, e, e | Ept.W, log, vcpu.index(), gfn, false) != EptLeaf.RACED) {
                vcpu.countExit(ExitReason.DIRTY_LOG);
                return true;
            }
        }
    }

    // ------------------------------------------------------------------ copy-on-write sharing

    /**
     * Gives guest frame {@code gfn} a private, writable frame again (a write to a shared frame, by a vCPU
     * or the host): the last mapper takes the shared frame over, others get a copy. Every vCPU of this
     * VM drops its read-only translations before the caller writes, so none keeps reading the shared
     * frame after this VM's copy diverged. Returns the private machine frame, logged as written.
     *
     * @throws HostOutOfMemoryException when no frame is left for the copy
     */
    @Override
    public long breakSharing(VcpuContext vcpu, long gfn) {
        FrameAllocator frames = vm.frames();
        int writer = vcpu == null ? -1 : vcpu.index();
        long shared;
        long mine;
        boolean copied = false;
        synchronized (lock) {
            long entry = vm.physicalMap().entry(gfn);
            shared = P2mEntry.frame(entry);
            if (shared < 0) {
                return -1; // discarded meanwhile: the retried access populates afresh
            }
            long d = frames.descriptor(shared);
            if (FrameDescriptor.type(d) != FrameDescriptor.TYPE_SHARED) {
                mine = shared; // private already (a sharing attempt that stopped half-way): just grant
            } else {
                mine = FrameSharing.privateFrame(vm, shared, gfn); // the last mapper keeps the frame, others copy
                copied = mine != shared;
                frames.setGuestFrame(mine, gfn);
                replaceEntry(gfn, entry, P2mEntry.privateFrame(mine));
                vm.privateFrameAdded();
                vm.copyOnWriteBroken();
            }
            long leafAddress = ept.leafAddress(gfn << MachineMemory.FRAME_SHIFT);
            if (leafAddress >= 0) {
                while (true) { // the hardware may be setting A in the read-only leaf
                    long e = ept.read(leafAddress);
                    if (EptLeaf.change(memory, leafAddress, e, EptLeaf.of(mine, EptLeaf.WRITABLE_FLAGS), log, writer, gfn, false)
                        != EptLeaf.RACED) {
                        break;
                    }
                }
            } else if (writer >= 0) {
                log.afterGrant(writer, gfn); // no leaf to grant (filled by the host only): log the vCPU's write
            }
        }
        if (copied) {
            vm.flushRemoteTlbs(); // nobody in this VM reads the shared frame once the copy is written...
            vm.awaitHostAccesses(); // ...nor a host access that looked the old frame up...
            vm.dropSharedReference(shared); // ...before this mapping's reference goes (maybe the last)
        }
        return mine;
    }

    /** Lock held. The p2m entry of {@code gfn} changes only under the lock once present, so the CAS cannot lose. */
    private void replaceEntry(long gfn, long expected, long update) {
        assert Thread.holdsLock(lock) : "the EPT lock must be held";
        if (!p2m.compareAndSet(gfn, expected, update)) {
            throw new IllegalStateException("guest frame 0x" + Long.toHexString(gfn) + " of VM " + vm.id()
                + " changed under the EPT lock: expected " + P2mEntry.describe(expected) + ", found "
                + P2mEntry.describe(vm.physicalMap().entry(gfn)));
        }
    }

    /**
     * Sharing, first step: removes write access from {@code gfn}'s leaf so the caller can compare
     * contents after a remote flush and after the host stores in flight. A populated frame without a
     * leaf (filled by the host only) gets a read-only one, so that a host store after this point is
     * seen too ({@link #beforeHostStore}). Returns the machine frame behind it, -1 when not populated.
     */
    @Override
    public long writeProtectForSharing(long gfn) {
        long gpa = gfn << MachineMemory.FRAME_SHIFT;
        synchronized (lock) {
            long entry = vm.physicalMap().entry(gfn);
            long mfn = P2mEntry.frame(entry);
            if (mfn < 0) {
                return -1;
            }
            long slot = ept.leafSlot(gpa);
            long e = memory.getLongVolatile(slot);
            if (!EptLeaf.present(e)) {
                long flags = P2mEntry.kind(entry) == P2mEntry.SHARED ? EptLeaf.SHARED_FLAGS : EptLeaf.READ_ONLY_FLAGS;
                EptLeaf.change(memory, slot, e, EptLeaf.of(mfn, flags), log, -1, gfn, false);
            } else {
                EptLeaf.clearBits(memory, slot, Ept.W, log, gfn, false);
            }
            return mfn;
        }
    }

    /**
     * A host-side store to {@code gfn} is about to write its private frame: the host writes through a
     * mapping of its own, which page sharing write-protects as KSM write-protects the process's page
     * table entry, so the store restores write access in the leaf by CAS (then the merge that protected
     * it sees the leaf writable and gives up). False when the leaf maps a shared frame: the caller breaks
     * sharing first. The store is logged by the caller after it lands.
     */
    @Override
    public boolean beforeHostStore(long gfn) {
        long leafAddress = ept.leafAddress(gfn << MachineMemory.FRAME_SHIFT);
        if (leafAddress < 0) {
            return true;
        }
        while (true) {
            long e = memory.getLongVolatile(leafAddress);
            if (!EptLeaf.present(e) || EptLeaf.writable(e)) {
                return true;
            }
            if ((e & EptLeaf.COW) != 0) {
                return false;
            }
            if (EptLeaf.change(memory, leafAddress, e, e | Ept.W, log, -1, gfn, false) != EptLeaf.RACED) {
                return true;
            }
        }
    }

    /**
     * Sharing, second step: makes {@code gfn}, still backed by {@code mfn} and still read-only (no write
     * since {@link #writeProtectForSharing}), map shared frame {@code shared} (which may be {@code mfn}
     * itself: the first mapper turns its frame into the shared one). False, nothing changed, when a write
     * or a discard got there first. The caller flushes this VM's TLBs.
     */
    @Override
    public boolean mapShared(long gfn, long mfn, long shared) {
        FrameAllocator frames = vm.frames();
        synchronized (lock) {
            long entry = vm.physicalMap().entry(gfn);
            if (P2mEntry.frame(entry) != mfn) {
                return false;
            }
            long leafAddress = ept.leafAddress(gfn << MachineMemory.FRAME_SHIFT);
            if (leafAddress < 0) {
                return false; // discarded since the write protection
            }
            long e = ept.read(leafAddress);
            if (!EptLeaf.present(e) || EptLeaf.writable(e) || EptLeaf.frame(e) != mfn) {
                return false; // written (by a vCPU or the host), remapped or discarded since the compare
            }
            // A D bit set by a write before the protection (complete: every vCPU was flushed since) is
            // dropped by the new leaf: the funnel logs it under D-bit logging.
            if (EptLeaf.change(memory, leafAddress, e, EptLeaf.of(shared, EptLeaf.SHARED_FLAGS), log, -1, gfn, false)
                == EptLeaf.RACED) {
                return false; // a write grant won the race: the contents may differ now
            }
            if (shared == mfn) {
                long d = frames.descriptor(mfn);
                if (FrameDescriptor.type(d) != FrameDescriptor.TYPE_SHARED) {
                    frames.compareAndSetDescriptor(mfn, d, FrameDescriptor.inUse(FrameDescriptor.TYPE_SHARED, 0, 1));
                    vm.privateFrameRemoved();
                    vm.sharedFrameCreated();
                }
            }
            replaceEntry(gfn, entry, P2mEntry.sharedFrame(shared));
            return true;
        }
    }

    @Override
    public FrameSharing sharing() {
        return this;
    }

    @Override
    public boolean unmapForSampling(long gfn) {
        synchronized (lock) {
            long leafAddress = ept.leafAddress(gfn << MachineMemory.FRAME_SHIFT);
            if (leafAddress < 0) {
                return false;
            }
            while (true) { // the funnel logs a D bit it drops
                long e = memory.getLongVolatile(leafAddress);
                if (!EptLeaf.present(e)) {
                    return false;
                }
                if (EptLeaf.change(memory, leafAddress, e, 0, log, -1, gfn, false) != EptLeaf.RACED) {
                    return true;
                }
            }
        }
    }

    @Override
    public boolean mapped(long gfn) {
        long leafAddress = ept.leafAddress(gfn << MachineMemory.FRAME_SHIFT);
        return leafAddress >= 0 && EptLeaf.present(memory.getLongVolatile(leafAddress));
    }


    @Override
    public boolean supports(DirtyTracking method) {
        return true;
    }

    @Override
    public void startDirtyLog(DirtyTracking method) {
        synchronized (lock) { // fills that read the log as off are complete and their leaves visible
            sweep(ept.root(), ept.levels(), 0, method == DirtyTracking.DIRTY_BITS ? Ept.D : Ept.W, null);
        }
    }

    @Override
    public void collectDirtyBits(DirtyBitmap bitmap) {
        sweep(ept.root(), ept.levels(), 0, Ept.D, bitmap);
    }

    @Override
    public void writeProtect(DirtySnapshot harvested) {
        for (long gfn = harvested.next(0); gfn >= 0; gfn = harvested.next(gfn + 1)) {
            long leafAddress = ept.leafAddress(gfn << MachineMemory.FRAME_SHIFT);
            if (leafAddress >= 0) {
                EptLeaf.clearBits(memory, leafAddress, Ept.W, log, gfn, false);
            }
        }
    }

    /**
     * Clears {@code bits} in every present leaf under the level-{@code level} table at {@code table}
     * (covering guest frames from {@code firstGfn}); with {@code collect} ({@code bits} is D), marks there
     * each frame whose leaf had it. The D bits this clears are either collected or, as logging starts, reset (so the
     * funnel does not log them). Visits tables in address order, each entry once.
     */
    private void sweep(long table, int level, long firstGfn, long bits, DirtyBitmap collect) {
        sweep(memory, log, table, level, firstGfn, bits, collect);
    }

    /**
     * The sweep proper, static with its memory and log as locals: after each volatile load of a leaf the
     * JIT may not reuse an instance field it loaded before, so fields read in the loop cost a load per
     * leaf (measured: ~20% of enabling write protection on 1 GiB).
     */
    private static void sweep(MachineMemory memory, DirtyLog.Writer log, long table, int level, long firstGfn, long bits,
                              DirtyBitmap collect) {
        int childShift = 9 * (level - 1);
        for (int i = 0; i < 512; i++) {
            long at = table + ((long) i << 3);
            long e = memory.getLongVolatile(at);
            if (!EptLeaf.present(e)) {
                continue;
            }
            long gfn = firstGfn + ((long) i << childShift);
            if (level > Pte.LEVEL_PT) {
                sweep(memory, log, e & Ept.ADDRESS_MASK, level - 1, gfn, bits, collect);
                continue;
            }
            if (collect != null) {
                EptLeaf.collectDirty(memory, at, e, log, gfn, collect);
            } else {
                EptLeaf.clearBits(memory, at, e, bits, log, gfn, true);
            }
        }
    }

    /**
     * Removes guest frame {@code gfn} from the EPT and returns its machine frame to the host, after every
     * vCPU has dropped cached translations to it (so no vCPU can touch the frame once it is reused).
     * Returns false when the frame was not populated. The guest sees zeros there on its next touch.
     */
    @Override
    public boolean unmap(long gfn, long mfn, long replacement) {
        // Unhook under the EPT lock: a fault handler holding an mfn read before this re-checks the p2m
        // under the same lock, so it cannot map the old frame back.
        synchronized (lock) {
            if (!p2m.remove(gfn, mfn, replacement)) {
                return false;
            }
            long leafAddress = ept.leafAddress(gfn << MachineMemory.FRAME_SHIFT);
            if (leafAddress >= 0) {
                while (true) { // its D bit is logged by the funnel
                    long e = memory.getLongVolatile(leafAddress);
                    if (EptLeaf.change(memory, leafAddress, e, 0, log, -1, gfn, false) != EptLeaf.RACED) {
                        break;
                    }
                }
            }
            return true;
        }
    }

    @Override
    public void release() {
        synchronized (lock) {
            for (long frame : tableFrames) {
                vm.frames().free(frame);
            }
            tableFrames.clear();
        }
    }
}
