package io.vmpage.engine;

import io.vmpage.mmu.Ept;
import io.vmpage.mmu.Fault;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.PageTables;
import io.vmpage.mmu.Pte;
import io.vmpage.mmu.Translation;

/**
 * Hardware-assisted paging: the engine keeps one EPT per VM (host-physical tables in frames charged to
 * the VM) and fills it on EPT violations, populating guest frames on first touch, as KVM's TDP MMU does.
 * The guest's own page tables, CR3 loads, INVLPG and #PFs never exit.
 *
 * <p>The EPT maps only frames this VM owns, so whatever the guest writes into its own tables, every
 * guest-physical address it can produce lands in its own memory or faults.
 *
 * <p><b>Dirty logging</b> (KVM's TDP MMU): write protection clears W in the EPT leaves, and a write
 * violation on a present, readable leaf is served lock-free by a CAS that sets W back (KVM's fast page
 * fault) and then logs the frame ({@link WriteProtection}); a fill while logging maps read-only unless
 * the access is a write. Dirty bits use the EPT D bits, which the hardware sets because every EPTP this
 * engine builds enables EPT A/D (bit 6).
 *
 * <p>Concurrency: EPT fills and removals take {@link #lock}; walks by every vCPU's hardware read the
 * entries lock-free (release stores pair with the walkers' volatile loads); W and D bits of present
 * leaves change only by CAS (the hardware sets A/D by CAS too).
 */
final class NestedPaging implements PagingBackend, FrameSharing {
    private static final long LEAF_FLAGS = Ept.RWX | Ept.MEMORY_TYPE_WB;
    private static final long READ_ONLY_LEAF_FLAGS = Ept.R | Ept.X | Ept.MEMORY_TYPE_WB;
    /**
     * Software bit of a leaf mapping a shared copy-on-write frame (EPT bits 56:52 are ignored by the
     * hardware). Changing it on a read-only leaf also makes a racing write grant's CAS fail, which is how
     * a frame is never shared while writable nor made writable once shared.
     * <pre>
     *  EPT leaf   63..57   56..53   52    51..12   11..10  9  8  7  6   5..3  2 1 0
     *            +-------+--------+-----+--------+-------+--+--+--+----+-----+-+-+-+
     *            |       |        | COW |  MFN   |       |D |A |PS|IPAT| MT  |X|W|R|   COW: W stays clear
     *            +-------+--------+-----+--------+-------+--+--+--+----+-----+-+-+-+
     * </pre>
     */
    static final long COW = 1L << 52;

    private final Vm vm;
    private final PageTables ept;
    private final long eptp;
    private final Object lock = new Object();
    private final java.util.List<Long> tableFrames = new java.util.ArrayList<>();

    NestedPaging(Vm vm) {
        this.vm = vm;
        this.ept = new PageTables(vm.host().memory(), PageTables.Format.EPT, 4, this::newTable);
        this.eptp = Ept.eptp(ept.root(), 4, true);
    }

    private long newTable() {
        long frame = vm.host().allocateTableFrame(vm.id());
        tableFrames.add(frame);
        return frame << MachineMemory.FRAME_SHIFT;
    }

    /** The EPT pointer every vCPU of the VM runs with (A/D enabled). */
    long eptp() {
        return eptp;
    }

    @Override
    public void attach(Vcpu vcpu) {
        vcpu.mmu().enter(vcpu.vpid(), eptp);
    }

    @Override
    public void loadCr3(Vcpu vcpu, long cr3) {
        vcpu.mmu().movToCr3(cr3); // no exit: EPT leaves CR3 to the guest
    }

    @Override
    public void invlpg(Vcpu vcpu, long va) {
        vcpu.mmu().invlpg(va);
    }

    @Override
    public int handleFault(Vcpu vcpu, Translation t) {
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
        boolean logWrite = false;
        synchronized (lock) {
            if (vm.physicalMap().machineFrame(gfn) != mfn) {
                return RETRY; // discarded meanwhile: fault again and populate afresh
            }
            long leafAddress = ept.leafAddress(gfn << MachineMemory.FRAME_SHIFT);
            if (leafAddress < 0 || (ept.read(leafAddress) & Ept.RWX) == 0) {
                DirtyTracking logging = vm.dirtyLog().method();
                boolean shared = FrameTable.type(vm.host().frames().descriptor(mfn)) == FrameTable.TYPE_SHARED;
                boolean writable = !shared && (write || logging == null || logging == DirtyTracking.DIRTY_BITS);
                ept.map(gfn << MachineMemory.FRAME_SHIFT, mfn << MachineMemory.FRAME_SHIFT, Pte.SHIFT_4K,
                    shared ? READ_ONLY_LEAF_FLAGS | COW : writable ? LEAF_FLAGS : READ_ONLY_LEAF_FLAGS);
                // A log enabled after this reads as off sweeps this leaf under the lock afterwards; D bits
                // record writes by themselves: only a write filled while the log is on needs a mark.
                logWrite = writable && write && logging != null;
            }
        }
        if (logWrite) {
            vm.dirtyLog().afterGrant(vcpu, gfn); // granted, then logged: see WriteProtection
        }
        return RETRY;
    }

    /**
     * A write violation on a present, readable leaf without W: a shared frame to copy, or write protection
     * by dirty logging or page sharing. Sets W by CAS and then logs the write; false when the leaf is not
     * such a leaf.
     */
    private boolean grantWrite(Vcpu vcpu, long gfn) {
        long leafAddress = ept.leafAddress(gfn << MachineMemory.FRAME_SHIFT);
        if (leafAddress < 0) {
            return false;
        }
        while (true) {
            long e = ept.read(leafAddress);
            if ((e & Ept.R) == 0) {
                return false;
            }
            if ((e & Ept.W) != 0) {
                return true; // another vCPU granted it (and logged it) meanwhile
            }
            if ((e & COW) != 0) {
                vcpu.countExit(ExitReason.COPY_ON_WRITE);
                breakSharing(vcpu, gfn);
                return true;
            }
            if (WriteProtection.grant(vm.host().memory(), leafAddress, e, e | Ept.W, vm.dirtyLog(), vcpu, gfn)) {
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
    public long breakSharing(Vcpu vcpu, long gfn) {
        FrameTable frames = vm.host().frames();
        long gpa = gfn << MachineMemory.FRAME_SHIFT;
        long shared;
        long mine;
        boolean copied;
        synchronized (lock) {
            shared = vm.physicalMap().machineFrame(gfn);
            if (shared < 0) {
                return -1; // discarded meanwhile: the retried access populates afresh
            }
            long d = frames.descriptor(shared);
            copied = false;
            if (FrameTable.type(d) != FrameTable.TYPE_SHARED) {
                mine = shared; // private already (a sharing attempt that stopped half-way): just grant
            } else if (FrameTable.refs(d) == 1 && frames.compareAndSetDescriptor(shared, d,
                    FrameTable.inUse(FrameTable.TYPE_DATA, vm.id(), 1))) {
                mine = shared; // the last mapper keeps the frame: no copy (KSM reuses a page mapped once)
                vm.host().sharedFrameReleased();
                frames.setGuestFrame(mine, gfn);
                vm.privateFrameAdded();
            } else {
                mine = frames.allocate(vm.id(), FrameTable.TYPE_DATA);
                if (mine < 0) {
                    throw new HostOutOfMemoryException("host out of machine frames breaking copy-on-write sharing of guest frame 0x"
                        + Long.toHexString(gfn) + " of VM " + vm.id());
                }
                vm.host().memory().copyFrame(shared, mine);
                frames.setGuestFrame(mine, gfn);
                vm.physicalMap().replace(gfn, shared, mine);
                vm.privateFrameAdded();
                copied = true;
            }
            long leafAddress = ept.leafAddress(gpa);
            if (leafAddress >= 0) {
                while (true) { // CAS: the hardware may be setting A in the read-only leaf
                    long e = ept.read(leafAddress);
                    long granted = (mine << MachineMemory.FRAME_SHIFT) | LEAF_FLAGS;
                    if (vm.host().memory().compareAndSetLong(leafAddress, e, granted)) {
                        break;
                    }
                }
            }
        }
        if (copied) {
            vm.flushRemoteTlbs(); // nobody in this VM reads the shared frame once the copy is written...
            vm.awaitHostAccesses(); // ...nor a host access that looked the old frame up...
            vm.host().dropSharedReference(shared); // ...before this mapping's reference goes (maybe the last)
        }
        vm.dirtyLog().afterGrant(vcpu, gfn);
        return mine;
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
            long mfn = vm.physicalMap().machineFrame(gfn);
            if (mfn < 0) {
                return -1;
            }
            long leafAddress = ept.leafAddress(gpa);
            if (leafAddress < 0 || (ept.read(leafAddress) & Ept.RWX) == 0) {
                boolean shared = FrameTable.type(vm.host().frames().descriptor(mfn)) == FrameTable.TYPE_SHARED;
                ept.map(gpa, mfn << MachineMemory.FRAME_SHIFT, Pte.SHIFT_4K, shared ? READ_ONLY_LEAF_FLAGS | COW : READ_ONLY_LEAF_FLAGS);
            } else {
                WriteProtection.revoke(vm.host().memory(), leafAddress, Ept.RWX, Ept.W, 0);
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
        MachineMemory memory = vm.host().memory();
        while (true) {
            long e = memory.getLongVolatile(leafAddress);
            if ((e & Ept.RWX) == 0 || (e & Ept.W) != 0) {
                return true;
            }
            if ((e & COW) != 0) {
                return false;
            }
            if (memory.compareAndSetLong(leafAddress, e, e | Ept.W)) {
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
        FrameTable frames = vm.host().frames();
        synchronized (lock) {
            if (vm.physicalMap().machineFrame(gfn) != mfn) {
                return false;
            }
            long leafAddress = ept.leafAddress(gfn << MachineMemory.FRAME_SHIFT);
            if (leafAddress < 0) {
                return false; // discarded since the write protection
            }
            long e = ept.read(leafAddress);
            if ((e & Ept.RWX) == 0 || (e & Ept.W) != 0 || (e & Ept.ADDRESS_MASK) != (mfn << MachineMemory.FRAME_SHIFT)) {
                return false; // written (by a vCPU or the host), remapped or discarded since the compare
            }
            long cow = (shared << MachineMemory.FRAME_SHIFT) | READ_ONLY_LEAF_FLAGS | COW;
            if (!vm.host().memory().compareAndSetLong(leafAddress, e, cow)) {
                return false; // a write grant won the race: the contents may differ now
            }
            if ((e & Ept.D) != 0) {
                // A write (complete: every vCPU was flushed since the write protection) set D and the
                // new leaf drops it: under D-bit logging the write would go unreported. Log it now.
                vm.dirtyLog().markDirtyBit(gfn);
            }
            if (shared == mfn) {
                long d = frames.descriptor(mfn);
                if (FrameTable.type(d) != FrameTable.TYPE_SHARED) {
                    frames.compareAndSetDescriptor(mfn, d,
                        FrameTable.inUse(FrameTable.TYPE_SHARED, 0, 1));
                    vm.privateFrameRemoved();
                    vm.host().sharedFrameCreated();
                }
                return true;
            }
            vm.physicalMap().replace(gfn, mfn, shared);
            return true;
        }
    }

    @Override
    public FrameSharing sharing() {
        return this;
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
        MachineMemory memory = vm.host().memory();
        for (long gfn = harvested.next(0); gfn >= 0; gfn = harvested.next(gfn + 1)) {
            long leafAddress = ept.leafAddress(gfn << MachineMemory.FRAME_SHIFT);
            if (leafAddress >= 0) {
                WriteProtection.revoke(memory, leafAddress, Ept.RWX, Ept.W, 0);
            }
        }
    }

    /**
     * Clears {@code bits} in every present leaf under the level-{@code level} table at {@code table}
     * (covering guest frames from {@code firstGfn}); with {@code collect}, marks there each frame whose
     * leaf had them. Visits tables in address order, each entry once.
     */
    private void sweep(long table, int level, long firstGfn, long bits, DirtyBitmap collect) {
        MachineMemory memory = vm.host().memory();
        int childShift = 9 * (level - 1);
        for (int i = 0; i < 512; i++) {
            long at = table + ((long) i << 3);
            long e = memory.getLongVolatile(at);
            if ((e & Ept.RWX) == 0) {
                continue;
            }
            long gfn = firstGfn + ((long) i << childShift);
            if (level > Pte.LEVEL_PT) {
                sweep(e & Ept.ADDRESS_MASK, level - 1, gfn, bits, collect);
            } else if (WriteProtection.revoke(memory, at, Ept.RWX, bits, 0) && collect != null) {
                collect.mark(gfn);
            }
        }
    }

    /**
     * Removes guest frame {@code gfn} from the EPT and returns its machine frame to the host, after every
     * vCPU has dropped cached translations to it (so no vCPU can touch the frame once it is reused).
     * Returns false when the frame was not populated. The guest sees zeros there on its next touch.
     */
    @Override
    public boolean discard(long gfn) {
        long mfn = vm.physicalMap().machineFrame(gfn);
        if (mfn < 0) {
            return false;
        }
        // Unhook under the EPT lock: a fault handler holding an mfn read before this re-checks the p2m
        // under the same lock, so it cannot map the old frame back.
        synchronized (lock) {
            if (!vm.physicalMap().remove(gfn, mfn)) {
                return false;
            }
            long leafAddress = ept.leafAddress(gfn << MachineMemory.FRAME_SHIFT);
            if (leafAddress >= 0) {
                ept.write(leafAddress, 0); // its D bit goes too: the mark below reports the page anyway
            }
        }
        vm.flushRemoteTlbs(); // no vCPU keeps a translation to the old frame...
        vm.releaseFrame(mfn); // ...nor a host access, before it can be handed to anyone else
        // The guest now reads zeros there: a copy built from harvests must learn it, or a migration would
        // bring the discarded contents back (QEMU migrates a discarded page as a zero page).
        vm.dirtyLog().markHost(gfn);
        return true;
    }

    @Override
    public void release() {
        synchronized (lock) {
            for (long frame : tableFrames) {
                vm.host().frames().free(frame);
            }
            tableFrames.clear();
        }
    }
}
