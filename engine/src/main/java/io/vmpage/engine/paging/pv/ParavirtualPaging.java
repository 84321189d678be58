package io.vmpage.engine.paging.pv;

import io.vmpage.engine.ExitReason;
import io.vmpage.engine.GuestFaultException;
import io.vmpage.engine.HostOutOfMemoryException;
import io.vmpage.engine.Hypercalls;
import io.vmpage.engine.Internal;
import io.vmpage.engine.dirty.DirtyBitmap;
import io.vmpage.engine.dirty.DirtySnapshot;
import io.vmpage.engine.dirty.DirtyTracking;
import io.vmpage.engine.dirty.WriteProtection;
import io.vmpage.engine.memory.FrameAllocator;
import io.vmpage.engine.memory.FrameDescriptor;
import io.vmpage.engine.paging.PagingBackend;
import io.vmpage.engine.paging.VcpuContext;
import io.vmpage.engine.paging.VmContext;
import io.vmpage.mmu.ControlRegisters;
import io.vmpage.mmu.Fault;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Pte;
import io.vmpage.mmu.Translation;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Paravirtual direct paging, after Xen's x86-64 PV MMU: guest page tables hold machine frame numbers
 * and the hardware (1D, no EPT) walks them directly. The guest maps its page-table pages read-only and
 * changes entries only through {@link Hypercalls#mmuUpdate}, which validates each one, so whatever the
 * guest asks no entry reachable by the hardware points at a frame the VM does not own, and no
 * page-table page is mapped writable.
 *
 * <p><b>Page types</b> (Xen's {@code type_info}), kept in the frame descriptor ({@link FrameDescriptor}):
 * {@code FrameDescriptor.TYPE_L1}..{@code FrameDescriptor.TYPE_L4} for a validated page table, {@code FrameDescriptor.TYPE_WRITABLE} for a frame
 * some L1 entry maps writable, {@code TYPE_DATA} for neither. The descriptor's reference
 * count is 1 + the type count (pins, loaded base pointers, referencing entries of validated tables,
 * writable L1 mappings); when the type count returns to 0 the frame becomes TYPE_DATA again, and an
 * untyped table drops the references its entries held. A frame has one type at a time, so a frame with
 * a writable mapping cannot become a table, and a table cannot be mapped writable.
 *
 * <p><b>Validation</b> of an entry {@code val} written at level L (Xen's {@code get_page_from_lN}):
 * <ul>
 * <li>non-present: always accepted (other bits ignored, as the hardware ignores them);
 * <li>reserved bits: address bits 51:MAXPHYADDR refused at every level; PS refused at L4 (reserved) and
 *     at L3/L2 (superpages are not supported, as Xen PV refuses them by default); NX and the software
 *     bits 62:52 and 11:9 are allowed;
 * <li>the target frame must be an allocated machine frame owned by this VM (not an engine table);
 * <li>L1: a writable mapping takes a {@code FrameDescriptor.TYPE_WRITABLE} reference (refused if the frame is a
 *     table); a read-only mapping of any own frame, tables included, is allowed and takes no type;
 * <li>L2..L4: the target must be a table of level L-1: already typed so (count + 1), or untyped, in
 *     which case all 512 of its entries are validated recursively first ({@code get_page_type}).
 *     Linear (recursive) page tables are therefore refused.
 * </ul>
 * The entry's pointer must be 8-byte aligned (the low bits would carry Xen's sub-command: only
 * {@code MMU_NORMAL_PT_UPDATE} is modelled) inside a frame of this VM typed as a table.
 *
 * <p><b>TLB coherence.</b> Correctness first: every accepted write that replaces a present entry is
 * followed by a remote flush of all of the VM's vCPUs ({@code Vm.flushRemoteTlbs}) before the old
 * target's references are dropped, so a frame loses its writable or table type only once no cached
 * translation can use the old entry. (Xen instead leaves these flushes to the guest's mmuext requests
 * and uses TLB-flush timestamps when a type changes.) Dropping a type after a base-pointer switch also
 * flushes first, since global translations survive CR3 loads.
 *
 * <p><b>Domain builder.</b> The engine (host side) may fill frames that are not typed yet with plain
 * stores ({@code Vm.writePhysicalLong}) before the guest pins them, as Xen's domain builder does;
 * pinning validates what was written. Host-side writes to a frame after it is typed bypass validation
 * and are the host's responsibility.
 *
 * <p><b>Concurrency.</b> Every hypercall runs under one per-VM lock. A vCPU waiting for it keeps serving
 * its flush requests, so a holder flushing remote TLBs cannot deadlock with it.
 *
 * <p><b>Dirty logging</b> (write protect and dirty ring): the hypervisor write-protects the guest's own
 * L1 entries, marking them {@link Hypercalls#LOG_DIRTY_WP} so the guest and the type counts still see
 * them as writable; the first write faults (#PF with P and W), and the hypervisor restores RW by CAS and
 * then logs the page ({@link WriteProtection}). {@link #mmuUpdate} logs the table page it writes, and
 * stores a new writable L1 entry protected. The hardware's A/D updates in guest tables cannot be
 * watched, so every harvest reports every page-table page (as Xen's PV migration re-sends page tables).
 * Dirty bits are not offered: the D bits the hardware sets are the guest's own.
 *
 * <p>Only 4-level paging is modelled (x86-64 PV has no LA57).
 */
@Internal
public final class ParavirtualPaging implements PagingBackend {
    private static final int ENTRIES = 512;
    private static final int MAX_TYPE_COUNT = 0xFFFF - 1;

    private final VmContext vm;
    private final MachineMemory memory;
    private final FrameAllocator frames;
    private final long reservedAddressBits;
    private final PvHypercalls[] hypercalls;
    /** The L4 each vCPU's CR3 holds a type reference on, -1 when none. Guarded by {@link #lock}. */
    private final long[] baseFrames;
    private final ReentrantLock lock = new ReentrantLock();
    /** Guarded by {@link #lock}. */
    private final Set<Long> pinned = new HashSet<>();
    /** Frames whose type is not TYPE_DATA (so {@link #release} can clear them). Guarded by {@link #lock}. */
    private final Set<Long> typed = new HashSet<>();
    /** Tables being validated right now: a reference back to one of them is refused. Guarded by {@link #lock}. */
    private final Set<Long> validating = new HashSet<>();
    /**
     * A vCPU switched base pointer since the last remote flush: translations cached from the old tables
     * (global ones survive CR3 loads) may not be backed by references. Guarded by {@link #lock}.
     */
    private boolean staleAfterSwitch;
    /** The VM is being destroyed: hypercalls are refused. Guarded by {@link #lock}. */
    private boolean released;
    /**
     * Read-only L1 mappings of each machine frame in the validated tables (a writable one is a type
     * reference instead), the part of Xen's general reference count ({@code count_info}) the frame
     * descriptor does not keep: a frame may leave the VM ({@link #unmap}) only when it is 0 and the
     * frame is untyped. Guarded by {@link #lock}.
     */
    private final org.agrona.collections.Long2LongHashMap readOnlyMappings = new org.agrona.collections.Long2LongHashMap(0);

    public ParavirtualPaging(VmContext vm) {
        if (vm.config().levels() != 4) {
            throw new IllegalArgumentException("paging mode PARAVIRTUAL models x86-64 Xen PV, 4-level paging only (got "
                + vm.config().levels() + " levels)");
        }
        this.vm = vm;
        this.memory = vm.memory();
        this.frames = vm.frames();
        long addressMask = (1L << vm.config().mmu().maxPhysAddrBits()) - 1;
        this.reservedAddressBits = Pte.ADDRESS_MASK & ~addressMask;
        this.hypercalls = new PvHypercalls[vm.config().vcpus()];
        this.baseFrames = new long[vm.config().vcpus()];
        java.util.Arrays.fill(baseFrames, -1);
    }

    /**
     * The state travels: guest page tables hold machine frame numbers, so {@link #exportTables}
     * canonicalizes them to guest frame numbers and {@link #importTables} translates them back on the
     * destination and re-pins them (Xen's {@code xc_domain_save}/{@code xc_domain_restore}).
     */
    @Override
    public boolean transfersState() {
        return true;
    }

    // ------------------------------------------------------------------ migration (Xen save/restore)

    /** Typed L4s the import validated only so that a vCPU could load them; dropped by {@link #importDone}. */
    private final java.util.List<Long> importHeld = new java.util.ArrayList<>();

    /**
     * Every validated page-table page (pinned or reached from one), its entries canonicalized: a present
     * entry's machine frame becomes the guest frame it backs (Xen's M2P), a log-dirty write protection is
     * taken back off (the guest's RW), the other bits stay.
     */
    @Override
    public java.util.List<io.vmpage.engine.PvTable> exportTables() {
        vm.lockServingRequests(lock);
        try {
            java.util.List<io.vmpage.engine.PvTable> tables = new java.util.ArrayList<>();
            for (long mfn : typed) {
                int type = FrameDescriptor.type(frames.descriptor(mfn));
                if (type == FrameDescriptor.TYPE_WRITABLE || !FrameDescriptor.isParavirtualType(type)) {
                    continue;
                }
                long[] entries = new long[ENTRIES];
                long base = mfn << MachineMemory.FRAME_SHIFT;
                for (int i = 0; i < ENTRIES; i++) {
                    long e = memory.getLongVolatile(base + ((long) i << 3));
                    if ((e & Pte.P) != 0) {
                        e = Hypercalls.guestView(e);
                        long target = (e & Pte.ADDRESS_MASK) >>> MachineMemory.FRAME_SHIFT;
                        long gfn = frames.guestFrame(target);
                        if (gfn < 0) {
                            throw new IllegalStateException("L" + FrameDescriptor.tableLevel(type) + " table " + mfn + " maps machine frame "
                                + target + ", which backs no guest frame");
                        }
                        e = (e & ~Pte.ADDRESS_MASK) | (gfn << MachineMemory.FRAME_SHIFT);
                    }
                    entries[i] = e;
                }
                tables.add(new io.vmpage.engine.PvTable(frames.guestFrame(mfn), FrameDescriptor.tableLevel(type), pinned.contains(mfn),
                    entries));
            }
            tables.sort(java.util.Comparator.comparingLong(io.vmpage.engine.PvTable::gfn)); // the same order on every host
            return tables;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Writes each table into its guest frame here with the guest frames translated to this VM's machine
     * frames (populating a target never sent, a zero page), then validates: pinned tables are pinned
     * again (validation types the tables and writable frames below them, as on the source), and an L4
     * typed without a pin (a vCPU's base pointer alone held it) is validated and held until the vCPUs
     * loaded their CR3s. A table that fails validation here is a corrupted or hostile stream.
     */
    @Override
    public void importTables(java.util.List<io.vmpage.engine.PvTable> tables) {
        vm.lockServingRequests(lock);
        try {
            for (io.vmpage.engine.PvTable t : tables) {
                long mfn = vm.populate(checkedGfn(t.gfn(), "table"));
                if (FrameDescriptor.type(frames.descriptor(mfn)) != FrameDescriptor.TYPE_DATA) {
                    throw new IllegalStateException("guest frame " + t.gfn() + " is restored twice as a page table");
                }
                long base = mfn << MachineMemory.FRAME_SHIFT;
                for (int i = 0; i < ENTRIES; i++) {
                    long e = t.entry(i);
                    if ((e & Pte.P) != 0) {
                        long target = vm.populate(checkedGfn((e & Pte.ADDRESS_MASK) >>> MachineMemory.FRAME_SHIFT, "entry target"));
                        e = (e & ~Pte.ADDRESS_MASK) | (target << MachineMemory.FRAME_SHIFT);
                    }
                    memory.putLongVolatile(base + ((long) i << 3), e);
                }
            }
            for (int level = Pte.LEVEL_PML4; level >= Pte.LEVEL_PT; level--) { // pins from the top: fewer re-walks
                for (io.vmpage.engine.PvTable t : tables) {
                    if (t.level() != level) {
                        continue;
                    }
                    long mfn = vm.physicalMap().machineFrame(t.gfn());
                    if (t.pinned()) {
                        restoreType(mfn, level, "pin");
                        pinned.add(mfn);
                    } else if (level == Pte.LEVEL_PML4 && FrameDescriptor.type(frames.descriptor(mfn)) != FrameDescriptor.TYPE_L4) {
                        restoreType(mfn, level, "base pointer");
                        importHeld.add(mfn);
                    }
                }
            }
        } finally {
            lock.unlock();
        }
    }

    @Override
    public void importDone() {
        vm.lockServingRequests(lock);
        try {
            for (long mfn : importHeld) {
                putType(mfn);
            }
            importHeld.clear();
        } finally {
            lock.unlock();
        }
    }

    /** Lock held. Types {@code mfn} as a table of {@code level}, validating it; a refusal is a bad stream. */
    private void restoreType(long mfn, int level, String why) {
        String error = getType(mfn, FrameDescriptor.tableType(level));
        if (error != null) {
            throw new IllegalStateException("restoring the L" + level + " table in machine frame " + mfn + " (" + why + "): " + error);
        }
    }

    private long checkedGfn(long gfn, String what) {
        if (!vm.physicalMap().contains(gfn)) {
            throw new IllegalStateException("a restored page " + what + " names guest frame " + gfn + ", outside VM " + vm.id()
                + "'s memory");
        }
        return gfn;
    }

    @Override
    public long canonicalCr3(long cr3) {
        long mfn = (cr3 & Pte.ADDRESS_MASK) >>> MachineMemory.FRAME_SHIFT;
        return (cr3 & ~Pte.ADDRESS_MASK) | (frames.guestFrame(mfn) << MachineMemory.FRAME_SHIFT);
    }

    @Override
    public long machineCr3(long canonicalCr3) {
        long gfn = checkedGfn((canonicalCr3 & Pte.ADDRESS_MASK) >>> MachineMemory.FRAME_SHIFT, "CR3");
        long mfn = vm.physicalMap().machineFrame(gfn);
        if (mfn < 0) {
            throw new IllegalStateException("CR3 names guest frame " + gfn + ", which holds no restored table");
        }
        return (canonicalCr3 & ~Pte.ADDRESS_MASK) | (mfn << MachineMemory.FRAME_SHIFT);
    }

    @Override
    public Hypercalls hypercalls(VcpuContext vcpu) {
        return hypercalls[vcpu.index()];
    }

    // ------------------------------------------------------------------ PagingBackend

    @Override
    public void attach(VcpuContext vcpu) {
        vcpu.mmu().enter(vcpu.vpid(), 0);
        hypercalls[vcpu.index()] = new PvHypercalls(this, vcpu, vm.physicalMap());
    }

    /** A native MOV to CR3 traps (the PV kernel is deprivileged) and is handled as MMUEXT_NEW_BASEPTR. */
    /**
     * A PV guest does not own CR0: Xen runs it with WP and PG set, since with WP clear its supervisor
     * code could write the read-only page-table pages that validation relies on. Clearing either is #GP.
     */
    @Override
    public void setCr0(VcpuContext vcpu, long value) {
        long required = ControlRegisters.CR0_WP | ControlRegisters.CR0_PG;
        if ((value & required) != required) {
            throw new GuestFaultException(Fault.GENERAL_PROTECTION, 0, 0);
        }
        vcpu.mmu().setCr0(value);
    }

    /** x86-64 PV is 4-level: CR4.LA57 would make the hardware read a validated L4 as a PML5 (#GP). */
    @Override
    public void setCr4(VcpuContext vcpu, long value) {
        if ((value & ControlRegisters.CR4_LA57) != 0) {
            throw new GuestFaultException(Fault.GENERAL_PROTECTION, 0, 0);
        }
        vcpu.mmu().setCr4(value);
    }

    @Override
    public void loadCr3(VcpuContext vcpu, long cr3) {
        vcpu.countExit(ExitReason.HYPERCALL);
        PvHypercalls h = hypercalls[vcpu.index()];
        if (!newBasePtr(h, cr3)) {
            throw new GuestFaultException(Fault.GENERAL_PROTECTION, 0, cr3);
        }
    }

    /** A native INVLPG traps and is handled as MMUEXT_INVLPG_LOCAL. */
    @Override
    public void invlpg(VcpuContext vcpu, long va) {
        vcpu.countExit(ExitReason.HYPERCALL);
        vcpu.mmu().invlpg(va);
    }

    @Override
    public int handleFault(VcpuContext vcpu, Translation t) {
        int protectionWrite = Fault.PF_P | Fault.PF_W;
        if (t.fault == Fault.PAGE_FAULT && (t.errorCode & (protectionWrite | Fault.PF_RSVD)) == protectionWrite
            && grantWrite(vcpu, t.va, (t.errorCode & Fault.PF_U) != 0)) {
            return RETRY;
        }
        if (t.fault == Fault.PAGE_FAULT) {
            // The hardware walked the guest's own tables: the guest's fault, bounced through the hypervisor.
            vcpu.countExit(ExitReason.PAGE_FAULT_INJECTED);
            return INJECT;
        }
        throw new IllegalStateException(Fault.name(t.fault) + " at 0x" + Long.toHexString(t.faultAddress) + " on " + vcpu
            + ": paravirtual paging runs without EPT");
    }

    /**
     * A write protection fault at {@code va}: when the L1 entry the vCPU's tables reach is log-dirty
     * write-protected, restores RW by CAS and logs the page. False when it is not (the guest's own fault).
     */
    private boolean grantWrite(VcpuContext vcpu, long va, boolean user) {
        long table = vcpu.mmu().registers().tableBase();
        long allowed = Pte.RW | Pte.US;
        for (int level = Pte.LEVEL_PML4; level > Pte.LEVEL_PT; level--) {
            long e = memory.getLongVolatile(table + ((long) Pte.index(va, level) << 3));
            if ((e & Pte.P) == 0 || (e & Pte.PS) != 0) {
                return false;
            }
            allowed &= e;
            table = e & Pte.ADDRESS_MASK & ~reservedAddressBits;
        }
        long at = table + ((long) Pte.index(va, Pte.LEVEL_PT) << 3);
        while (true) {
            long e = Hypercalls.guestView(memory.getLongVolatile(at));
            long need = user ? Pte.RW | Pte.US : Pte.RW; // CR0.WP is always set under PV
            if ((e & Pte.P) == 0 || (allowed & e & need) != need) {
                return false; // the guest's own protection fault
            }
            long raw = memory.getLongVolatile(at);
            if ((raw & Hypercalls.LOG_DIRTY_WP) == 0) {
                return true; // another vCPU granted it meanwhile: retry
            }
            long gfn = frames.guestFrame(PvL1Entry.frame(raw));
            if (PvL1Entry.change(memory, at, raw, PvL1Entry.granted(raw), vm.dirtyLog(), vcpu.index(), gfn) != PvL1Entry.RACED) {
                vcpu.countExit(ExitReason.DIRTY_LOG);
                return true;
            }
        }
    }

    @Override
    public void startDirtyLog(DirtyTracking method) {
        protectL1Entries(null);
    }

    @Override
    public void writeProtect(DirtySnapshot harvested) {
        protectL1Entries(harvested);
    }

    /** Write-protects every writable L1 entry (or, with {@code only}, those mapping a frame in it). */
    private void protectL1Entries(DirtySnapshot only) {
        vm.lockServingRequests(lock);
        try {
            for (long mfn : typed) {
                if (FrameDescriptor.type(frames.descriptor(mfn)) == FrameDescriptor.TYPE_L1) {
                    protectL1Table(mfn, only);
                }
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * Lock held. Write-protects the writable entries of L1 table {@code mfn} (with {@code only}, those
     * mapping a frame in it), marking them {@link Hypercalls#LOG_DIRTY_WP}.
     */
    private void protectL1Table(long mfn, DirtySnapshot only) {
        assert lock.isHeldByCurrentThread() : "the mmu lock must be held";
        long base = mfn << MachineMemory.FRAME_SHIFT;
        for (int i = 0; i < ENTRIES; i++) {
            long at = base + ((long) i << 3);
            long e = memory.getLongVolatile(at);
            if ((e & (Pte.P | Pte.RW)) != (Pte.P | Pte.RW)) {
                continue;
            }
            if (only != null) {
                long gfn = frames.guestFrame((e & Pte.ADDRESS_MASK) >>> MachineMemory.FRAME_SHIFT);
                if (gfn < 0 || gfn >= only.frames() || !only.isDirty(gfn)) {
                    continue;
                }
            }
            PvL1Entry.writeProtect(memory, at, vm.dirtyLog());
        }
    }

    @Override
    public void markUntracked(DirtyBitmap bitmap) {
        vm.lockServingRequests(lock);
        try {
            for (long mfn : typed) {
                if (FrameDescriptor.tableLevel(FrameDescriptor.type(frames.descriptor(mfn))) > 0) {
                    long gfn = frames.guestFrame(mfn);
                    if (gfn >= 0) {
                        bitmap.mark(gfn); // the hardware sets A/D in it without any permission to watch
                    }
                }
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * Guest frame {@code gfn} leaves the VM (its balloon's inflate, a discard): what Xen's
     * {@code XENMEM_decrease_reservation} allows. The host cannot take a frame from a PV guest behind its
     * back, since the guest's tables name machine frames; the guest gives one up by first removing every
     * mapping of it from its own tables (Linux's Xen balloon clears the page's direct-map entry), and the
     * hypervisor then takes it only if nothing still refers to it: no page-table type, no writable
     * mapping (both type references), no read-only mapping. False, nothing changed, otherwise. Every
     * update that removed a mapping flushed the vCPUs, so no TLB still reaches the frame.
     */
    @Override
    public boolean unmap(long gfn, long mfn, long replacement) {
        vm.lockServingRequests(lock);
        try {
            if (FrameDescriptor.type(frames.descriptor(mfn)) != FrameDescriptor.TYPE_DATA || readOnlyMappings.get(mfn) != 0) {
                return false;
            }
            return vm.physicalMapWriter().remove(gfn, mfn, replacement);
        } finally {
            lock.unlock();
        }
    }

    @Override
    public void release() {
        lock.lock();
        try {
            released = true;
            for (long mfn : typed) {
                while (true) {
                    long d = frames.descriptor(mfn);
                    if (FrameDescriptor.isFree(d) || FrameDescriptor.owner(d) != vm.id() || !FrameDescriptor.isParavirtualType(FrameDescriptor.type(d))) {
                        break;
                    }
                    long clean = FrameDescriptor.withTypeAndRefs(d, FrameDescriptor.TYPE_DATA, 1);
                    if (frames.compareAndSetDescriptor(mfn, d, clean)) {
                        break;
                    }
                }
            }
            typed.clear();
            readOnlyMappings.clear();
            pinned.clear();
            validating.clear();
            java.util.Arrays.fill(baseFrames, -1);
        } finally {
            lock.unlock();
        }
    }

    // ------------------------------------------------------------------ hypercalls

    long populatePhysmap(PvHypercalls h, long gfn) {
        if (!vm.physicalMap().contains(gfn)) {
            h.refuse("populate_physmap: guest frame 0x" + Long.toHexString(gfn) + " is outside VM " + vm.id() + "'s memory");
            return -1;
        }
        try {
            return vm.populate(gfn);
        } catch (HostOutOfMemoryException e) {
            h.refuse("populate_physmap: " + e.getMessage());
            return -1;
        }
    }

    int mmuUpdate(PvHypercalls h, long[] ptrs, long[] vals, int count) {
        if (!lock(h)) {
            return 0;
        }
        try {
            for (int i = 0; i < count; i++) {
                String error = update(ptrs[i], vals[i]);
                if (error != null) {
                    h.refuse("mmu_update request " + i + " (ptr 0x" + Long.toHexString(ptrs[i]) + ", val 0x"
                        + Long.toHexString(vals[i]) + "): " + error);
                    return i;
                }
            }
            return count;
        } finally {
            lock.unlock();
        }
    }

    /** One MMU_NORMAL_PT_UPDATE; null when applied, else why not (entry unchanged). */
    private String update(long ptr, long val) {
        if ((ptr & 7) != 0) {
            return "ptr is not an 8-byte aligned entry address (only MMU_NORMAL_PT_UPDATE is supported)";
        }
        if (ptr < 0 || ptr >= memory.size()) {
            return "ptr is outside machine memory";
        }
        long tableFrame = ptr >>> MachineMemory.FRAME_SHIFT;
        long d = frames.descriptor(tableFrame);
        if (!ownedByVm(d)) {
            return "ptr is in machine frame " + tableFrame + ", which VM " + vm.id() + " does not own";
        }
        int level = FrameDescriptor.tableLevel(FrameDescriptor.type(d));
        if (level == 0) {
            return "ptr is in machine frame " + tableFrame + ", which is not a validated page table (type "
                + FrameDescriptor.typeName(FrameDescriptor.type(d)) + ")";
        }
        val &= ~Hypercalls.LOG_DIRTY_WP; // the hypervisor's bit
        String error = getEntry(level, val);
        if (error != null) {
            return "L" + level + " entry refused: " + error;
        }
        long stored = val;
        if (level == Pte.LEVEL_PT && (val & (Pte.P | Pte.RW)) == (Pte.P | Pte.RW) && logsByWriteProtection()) {
            stored = PvL1Entry.writeProtected(val); // writable once the first write is logged
        }
        long old;
        if (level == Pte.LEVEL_PT) {
            long gfn = PvL1Entry.present(stored) ? frames.guestFrame(PvL1Entry.frame(stored)) : -1;
            do { // CAS: the hardware may set A/D in the old entry meanwhile
                old = memory.getLongVolatile(ptr);
            } while (PvL1Entry.change(memory, ptr, old, stored, vm.dirtyLog(), -1, gfn) == PvL1Entry.RACED);
        } else {
            do {
                old = memory.getLongVolatile(ptr);
            } while (!memory.compareAndSetLong(ptr, old, stored));
        }
        long tableGfn = frames.guestFrame(tableFrame);
        if (tableGfn >= 0) {
            vm.dirtyLog().markHost(tableGfn); // the hypervisor wrote the guest's table page
        }
        if ((old & Pte.P) != 0) {
            vm.flushRemoteTlbs(); // no vCPU may keep using the old entry once its target loses a type
            staleAfterSwitch = false;
        }
        putEntry(level, old);
        return null;
    }

    boolean pinTable(PvHypercalls h, int level, long mfn) {
        if (level < Pte.LEVEL_PT || level > Pte.LEVEL_PML4) {
            h.refuse("pin: table level " + level + " must be 1..4");
            return false;
        }
        if (!lock(h)) {
            return false;
        }
        try {
            if (pinned.contains(mfn)) {
                h.refuse("pin: machine frame " + mfn + " is already pinned");
                return false;
            }
            String error = ownedFrame(mfn);
            if (error == null) {
                error = getType(mfn, FrameDescriptor.tableType(level));
            }
            if (error != null) {
                h.refuse("pin L" + level + " table " + mfn + ": " + error);
                return false;
            }
            pinned.add(mfn);
            return true;
        } finally {
            lock.unlock();
        }
    }

    boolean unpinTable(PvHypercalls h, long mfn) {
        if (!lock(h)) {
            return false;
        }
        try {
            if (!pinned.remove(mfn)) {
                h.refuse("unpin: machine frame " + mfn + " is not pinned");
                return false;
            }
            putType(mfn);
            return true;
        } finally {
            lock.unlock();
        }
    }

    boolean newBasePtr(PvHypercalls h, long cr3) {
        VcpuContext vcpu = h.context();
        long mfn = (cr3 & ~ControlRegisters.CR3_NO_FLUSH & ~ControlRegisters.CR3_PCID_MASK) >>> MachineMemory.FRAME_SHIFT;
        if (!lock(h)) {
            return false;
        }
        try {
            String error = (cr3 & ~ControlRegisters.CR3_NO_FLUSH & reservedAddressBits) != 0
                ? "bits above MAXPHYADDR are set" : ownedFrame(mfn);
            if (error == null) {
                long d = frames.descriptor(mfn);
                if (FrameDescriptor.type(d) != FrameDescriptor.TYPE_L4 || validating.contains(mfn)) {
                    error = "machine frame " + mfn + " is not a validated (pinned) L4 table (type " + FrameDescriptor.typeName(FrameDescriptor.type(d)) + ")";
                } else {
                    error = getType(mfn, FrameDescriptor.TYPE_L4); // the loaded base pointer holds a type reference
                }
            }
            if (error != null) {
                h.refuse("new_baseptr 0x" + Long.toHexString(cr3) + ": " + error);
                return false;
            }
            long value = vcpu.mmu().registers().pcide() ? cr3 : cr3 & ~ControlRegisters.CR3_NO_FLUSH;
            vcpu.mmu().movToCr3(value);
            long old = baseFrames[vcpu.index()];
            baseFrames[vcpu.index()] = mfn;
            if (old >= 0) {
                if (old != mfn) {
                    staleAfterSwitch = true;
                }
                putType(old);
            }
            return true;
        } finally {
            lock.unlock();
        }
    }

    void invlpgAll(PvHypercalls h, long va) {
        if (!lock(h)) {
            vm.flushRemoteTlbs(); // nested in a hypercall that holds the lock: flush, leave its state alone
            return;
        }
        try {
            vm.flushRemoteTlbs();
            staleAfterSwitch = false;
        } finally {
            lock.unlock();
        }
    }

    /**
     * Takes the VM's hypercall lock, serving flush requests while waiting (the holder may be flushing us).
     * False, lock not taken, when this thread already holds it: a guest IPI handler run while this
     * thread's own hypercall waits for a remote flush. Xen delivers events only on return to the guest,
     * so hypercalls never nest; here the nested one is refused rather than run on half-updated state.
     */
    private boolean lock(PvHypercalls h) {
        if (lock.isHeldByCurrentThread()) {
            h.refuse("hypercall made from an interrupt handler while this vCPU's previous hypercall is in progress");
            return false;
        }
        vm.lockServingRequests(lock);
        if (released) {
            lock.unlock();
            h.refuse("VM " + vm.id() + " is destroyed");
            return false;
        }
        return true;
    }

    // ------------------------------------------------------------------ references and types

    /** Validates entry {@code val} at {@code level} and takes the references it needs; null when accepted. */
    private String getEntry(int level, long val) {
        if ((val & Pte.P) == 0) {
            return null;
        }
        if ((val & reservedAddressBits) != 0) {
            return "reserved address bits above MAXPHYADDR are set";
        }
        if (level == Pte.LEVEL_PML4 && (val & Pte.PS) != 0) {
            return "PS is reserved in an L4 entry";
        }
        if (level > Pte.LEVEL_PT && (val & Pte.PS) != 0) {
            return "superpages (PS at L" + level + ") are not supported";
        }
        long target = (val & Pte.ADDRESS_MASK) >>> MachineMemory.FRAME_SHIFT;
        String error = ownedFrame(target);
        if (error != null) {
            return error;
        }
        if (level == Pte.LEVEL_PT) {
            if (!writableL1(val)) {
                readOnlyMappings.put(target, readOnlyMappings.get(target) + 1);
                return null; // read-only: any own frame, page tables included
            }
            error = getType(target, FrameDescriptor.TYPE_WRITABLE);
            return error == null ? null : "writable mapping refused: " + error;
        }
        return getType(target, FrameDescriptor.tableType(level - 1));
    }

    /** Drops the references entry {@code val} at {@code level} held. */
    private void putEntry(int level, long val) {
        if ((val & Pte.P) == 0) {
            return;
        }
        long target = (val & Pte.ADDRESS_MASK) >>> MachineMemory.FRAME_SHIFT;
        if (level == Pte.LEVEL_PT && !writableL1(val)) {
            long left = readOnlyMappings.get(target) - 1;
            if (left > 0) {
                readOnlyMappings.put(target, left);
            } else {
                readOnlyMappings.remove(target);
            }
            return;
        }
        putType(target);
    }

    /** An L1 entry the guest made writable (RW, or RW held back by log-dirty write protection). */
    private static boolean writableL1(long val) {
        return (val & (Pte.RW | Hypercalls.LOG_DIRTY_WP)) != 0;
    }

    /** Takes a reference of type {@code type} on own frame {@code mfn}, validating a table on first use. */
    private String getType(long mfn, int type) {
        if (validating.contains(mfn)) {
            return "machine frame " + mfn + " is being validated as a page table (circular reference)";
        }
        long d = frames.descriptor(mfn);
        int current = FrameDescriptor.type(d);
        if (current == type) {
            if (FrameDescriptor.refs(d) - 1 >= MAX_TYPE_COUNT) {
                return "machine frame " + mfn + " type count overflows";
            }
            while (!frames.compareAndSetDescriptor(mfn, d, d + FrameDescriptor.REF_ONE)) {
                d = frames.descriptor(mfn);
            }
            return null;
        }
        if (current != FrameDescriptor.TYPE_DATA) {
            return "machine frame " + mfn + " is typed " + FrameDescriptor.typeName(current) + ", not " + FrameDescriptor.typeName(type);
        }
        if (type != FrameDescriptor.TYPE_WRITABLE) {
            int level = FrameDescriptor.tableLevel(type);
            validating.add(mfn);
            try {
                long base = mfn << MachineMemory.FRAME_SHIFT;
                for (int i = 0; i < ENTRIES; i++) {
                    long e = memory.getLongVolatile(base + ((long) i << 3));
                    String error = getEntry(level, e);
                    if (error != null) {
                        for (int j = 0; j < i; j++) { // roll back what the earlier entries took
                            putEntry(level, memory.getLongVolatile(base + ((long) j << 3)));
                        }
                        return "validating machine frame " + mfn + " as " + FrameDescriptor.typeName(type) + ", entry " + i
                            + " (0x" + Long.toHexString(e) + "): " + error;
                    }
                }
            } finally {
                validating.remove(mfn);
            }
        }
        while (true) {
            d = frames.descriptor(mfn);
            long update = FrameDescriptor.withTypeAndRefs(d, type, 2);
            if (frames.compareAndSetDescriptor(mfn, d, update)) {
                break;
            }
        }
        typed.add(mfn);
        if (type == FrameDescriptor.TYPE_L1 && logsByWriteProtection()) {
            // Entries written before validation (a domain builder's stores, a guest filling a page before
            // linking it) become reachable now: protect them as the log-dirty sweep protected the others.
            protectL1Table(mfn, null);
        }
        return null;
    }

    /** Logging that needs the guest's writable L1 entries write-protected (not D bits, which PV does not offer). */
    private boolean logsByWriteProtection() {
        DirtyTracking logging = vm.dirtyLog().method();
        return logging == DirtyTracking.WRITE_PROTECT || logging == DirtyTracking.DIRTY_RING;
    }

    /** Drops one type reference on {@code mfn}; at zero the frame becomes TYPE_DATA, a table dropping its entries' references. */
    private void putType(long mfn) {
        long d = frames.descriptor(mfn);
        int type = FrameDescriptor.type(d);
        if (!FrameDescriptor.isParavirtualType(type) || FrameDescriptor.refs(d) < 2) {
            throw new IllegalStateException("machine frame " + mfn + " of VM " + vm.id() + " has no type reference to drop ("
                + FrameDescriptor.typeName(type) + ", refs " + FrameDescriptor.refs(d) + ")");
        }
        if (FrameDescriptor.refs(d) == 2 && staleAfterSwitch) {
            vm.flushRemoteTlbs(); // global translations through old base pointers must not outlive the type
            staleAfterSwitch = false;
        }
        while (true) {
            d = frames.descriptor(mfn);
            boolean last = FrameDescriptor.refs(d) == 2;
            long update = last
                ? FrameDescriptor.withTypeAndRefs(d, FrameDescriptor.TYPE_DATA, 1)
                : d - FrameDescriptor.REF_ONE;
            if (frames.compareAndSetDescriptor(mfn, d, update)) {
                if (!last) {
                    return;
                }
                break;
            }
        }
        typed.remove(mfn);
        int level = FrameDescriptor.tableLevel(type);
        if (level > 0) {
            long base = mfn << MachineMemory.FRAME_SHIFT;
            for (int i = 0; i < ENTRIES; i++) {
                putEntry(level, memory.getLongVolatile(base + ((long) i << 3)));
            }
        }
    }

    /** Null when {@code mfn} is an allocated machine frame owned by this VM holding guest memory, else why not. */
    private String ownedFrame(long mfn) {
        if (mfn <= 0 || mfn >= frames.frames()) {
            return "machine frame " + mfn + " does not exist";
        }
        if (!ownedByVm(frames.descriptor(mfn))) {
            return "machine frame " + mfn + " is not owned by VM " + vm.id();
        }
        return null;
    }

    private boolean ownedByVm(long d) {
        return FrameDescriptor.isUsed(d) && !FrameDescriptor.isFree(d) && FrameDescriptor.owner(d) == vm.id()
            && FrameDescriptor.type(d) != FrameDescriptor.TYPE_HOST_TABLE;
    }

}
