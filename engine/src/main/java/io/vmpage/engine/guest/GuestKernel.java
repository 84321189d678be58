package io.vmpage.engine.guest;

import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.mmu.ControlRegisters;
import io.vmpage.mmu.Fault;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Pte;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicReference;

/**
 * A small guest kernel that drives the virtual hardware the way Linux does on x86-64:
 * <ul>
 * <li>a direct map of all guest RAM at {@link #DIRECT_MAP} (Linux's physmap), built at boot by the
 *     bootloader; afterwards the kernel reads and writes its page tables through it, with ordinary
 *     guest stores (which is exactly what a shadow-paging hypervisor must trap);</li>
 * <li>address spaces with their own PML4 and PCID sharing the kernel half;</li>
 * <li>anonymous mappings ({@link #mmap}) populated on demand by its #PF handler (demand-zero), with
 *     {@link #munmap} and {@link #mprotect} rewriting entries;</li>
 * <li>context switches by CR3 loads with the PCID no-flush bit, and TLB shootdowns: an IPI to every vCPU
 *     running the address space, which executes INVLPG; vCPUs that ran it before but run another one
 *     now flush it when they switch back (Linux's lazy per-PCID flush).</li>
 * </ul>
 * How page-table entries are written and CR3 loaded goes through {@link PagingOps}: plain stores for
 * nested and shadow paging, hypercalls for paravirtual.
 *
 * <p>The kernel's bookkeeping (free-frame list, VMAs) is kept on the Java side; its page tables and
 * data are in guest memory. Guest locks spin with {@link Vcpu#relax()}, serving IPIs while they wait.
 */
public final class GuestKernel {
    /** Start of the direct map of guest RAM (Linux x86-64 {@code PAGE_OFFSET} without KASLR). */
    public static final long DIRECT_MAP = 0xFFFF_8880_0000_0000L;
    /** Protection bits for {@link #mmap} and {@link #mprotect}. */
    public static final int PROT_READ = 1;
    public static final int PROT_WRITE = 2;
    public static final int PROT_EXEC = 4;

    private static final int KERNEL_HALF = 256;

    private final Vm vm;
    private final PagingOps ops;
    private final long[] freeFrames;
    private int freeCount;
    private final long kernelRoot;
    private final AddressSpace kernelSpace;
    private final AddressSpace[] running;
    private final AtomicReference<Vcpu> lockOwner = new AtomicReference<>();
    private int nextPcid = 1;
    /** Every address space, the kernel's first, in creation order (their indices travel in {@link #saveState}). Kernel lock. */
    private final List<AddressSpace> spaces = new ArrayList<>();

    /** The virtio-balloon driver, on the VM's balloon device. */
    private final BalloonDriver balloon;

    private GuestKernel(Vm vm, PagingOps ops, long kernelRoot, long[] freeFrames, int freeCount) {
        this.balloon = new BalloonDriver(this, vm.balloon());
        this.vm = vm;
        this.ops = ops;
        this.kernelRoot = kernelRoot;
        this.freeFrames = freeFrames;
        this.freeCount = freeCount;
        this.running = new AddressSpace[vm.vcpus().size()];
        this.kernelSpace = new AddressSpace(this, kernelRoot, 0, vm.vcpus().size());
        spaces.add(kernelSpace);
    }

    // ------------------------------------------------------------------ migration

    private static final int STATE_MAGIC = 0x474B_5332; // "GKS2": version 2 carries the balloon's pages

    /**
     * The kernel's state that lives outside guest memory (its free-frame list, address spaces with their
     * mappings and per-vCPU flags, what each vCPU runs, and for a paravirtual guest the guest frames it
     * populated and where its direct map's tables are), as device state for a migration: a VM migrated
     * with it continues exactly where it was ({@link #restore}). Its page tables and data are in guest
     * memory and travel with it. Call with the VM paused, or no vCPU inside the kernel.
     *
     * @throws IllegalStateException when a vCPU is inside the kernel (holds its lock)
     */
    public byte[] saveState() {
        if (lockOwner.get() != null) {
            throw new IllegalStateException("vCPU " + lockOwner.get().index() + " is inside the guest kernel: its state is not at rest");
        }
        java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
        try (java.io.DataOutputStream out = new java.io.DataOutputStream(bytes)) {
            out.writeInt(STATE_MAGIC);
            ops.saveState(out);
            out.writeInt(freeFrames.length);
            out.writeInt(freeCount);
            for (int i = 0; i < freeCount; i++) {
                out.writeLong(freeFrames[i]);
            }
            out.writeLong(kernelRoot);
            out.writeInt(nextPcid);
            out.writeInt(spaces.size());
            for (AddressSpace space : spaces) {
                out.writeLong(space.rootGfn);
                out.writeInt(space.pcid);
                for (int i = 0; i < running.length; i++) {
                    out.writeByte((space.usedOn[i] ? 1 : 0) | (space.staleOn[i] ? 2 : 0));
                }
                synchronized (space.vmas) {
                    out.writeInt(space.vmas.size());
                    for (Vma v : space.vmas.values()) {
                        out.writeLong(v.start);
                        out.writeLong(v.end);
                        out.writeInt(v.prot);
                    }
                }
            }
            for (AddressSpace r : running) {
                out.writeInt(spaces.indexOf(r));
            }
            balloon.save(out);
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
        return bytes.toByteArray();
    }

    /**
     * The kernel {@link #saveState} saved, on {@code vm}: the destination of a migration, whose memory,
     * vCPU registers and (paravirtual) page tables are in place. Installs the kernel's page-fault handler
     * on every vCPU, as booting did.
     *
     * @throws IllegalArgumentException when {@code state} is not a kernel state for this VM's shape
     */
    public static GuestKernel restore(Vm vm, byte[] state) {
        try (java.io.DataInputStream in = new java.io.DataInputStream(new java.io.ByteArrayInputStream(state))) {
            if (in.readInt() != STATE_MAGIC) {
                throw new IllegalArgumentException("not a guest kernel state");
            }
            PagingOps ops = vm.pagingMode() == io.vmpage.engine.PagingMode.PARAVIRTUAL ? PagingOps.Paravirtual.restore(vm, in)
                : new PagingOps.Native();
            int capacity = in.readInt();
            int free = in.readInt();
            if (capacity < 0 || capacity > vm.physicalMap().frames() || free < 0 || free > capacity) {
                throw new IllegalArgumentException("a guest kernel state of " + free + "/" + capacity + " free frames for a VM of "
                    + vm.physicalMap().frames());
            }
            long[] freeFrames = new long[capacity];
            for (int i = 0; i < free; i++) {
                freeFrames[i] = frame(vm, in.readLong());
            }
            GuestKernel kernel = new GuestKernel(vm, ops, frame(vm, in.readLong()), freeFrames, free);
            kernel.nextPcid = in.readInt();
            int n = in.readInt();
            if (n < 1 || n > 1 << 20) {
                throw new IllegalArgumentException("a guest kernel state with " + n + " address spaces");
            }
            for (int i = 0; i < n; i++) {
                long root = frame(vm, in.readLong());
                int pcid = in.readInt();
                AddressSpace space = i == 0 ? kernel.kernelSpace : new AddressSpace(kernel, root, pcid, kernel.running.length);
                if (i == 0 && (root != kernel.kernelRoot || pcid != 0)) {
                    throw new IllegalArgumentException("a guest kernel state whose first address space is not the kernel's");
                }
                for (int v = 0; v < kernel.running.length; v++) {
                    int flags = in.readByte();
                    space.usedOn[v] = (flags & 1) != 0;
                    space.staleOn[v] = (flags & 2) != 0;
                }
                int vmas = in.readInt();
                for (int j = 0; j < vmas; j++) {
                    long start = in.readLong();
                    long end = in.readLong();
                    int prot = in.readInt();
                    checkRange(start, end - start);
                    space.vmas.put(start, new Vma(start, end, prot));
                }
                if (i > 0) {
                    kernel.spaces.add(space);
                }
            }
            for (int v = 0; v < kernel.running.length; v++) {
                int index = in.readInt();
                if (index < 0 || index >= n) {
                    throw new IllegalArgumentException("vCPU " + v + " runs address space " + index + " of " + n);
                }
                kernel.running[v] = kernel.spaces.get(index);
            }
            kernel.balloon.restore(in, vm.physicalMap().frames());
            if (in.read() >= 0) {
                throw new IllegalArgumentException("a guest kernel state with bytes after its end");
            }
            for (Vcpu cpu : vm.vcpus()) {
                cpu.setPageFaultHandler(kernel::onPageFault);
            }
            return kernel;
        } catch (java.io.IOException e) {
            throw new IllegalArgumentException("a truncated guest kernel state: " + e.getMessage(), e);
        }
    }

    /**
     * Boots the kernel on {@code vm}: builds the direct map (bootloader), then brings up every vCPU
     * (CR0.WP, CR4.PCIDE|PGE, EFER.NXE, the #PF handler, CR3 = the kernel address space).
     */
    public static GuestKernel boot(Vm vm) {
        Boot boot = vm.pagingMode() == io.vmpage.engine.PagingMode.PARAVIRTUAL ? Boot.paravirtual(vm) : Boot.directMap(vm);
        PagingOps ops = PagingOps.forVm(vm, boot);
        GuestKernel kernel = new GuestKernel(vm, ops, boot.rootGfn(), boot.freeFrames(), boot.freeCount());
        for (Vcpu cpu : vm.vcpus()) {
            cpu.setCr0(ControlRegisters.CR0_PG | ControlRegisters.CR0_WP);
            cpu.setEfer(ControlRegisters.EFER_NXE);
            cpu.setCr4(ControlRegisters.CR4_PCIDE | ControlRegisters.CR4_PGE);
            cpu.setPageFaultHandler(kernel::onPageFault);
            kernel.running[cpu.index()] = kernel.kernelSpace;
            kernel.kernelSpace.usedOn[cpu.index()] = true;
            ops.loadCr3(cpu, boot.rootGfn(), 0, false);
        }
        return kernel;
    }

    public Vm vm() {
        return vm;
    }

    /** Guest frames still free. */
    public int freeFrameCount() {
        return freeCount;
    }

    /** The kernel's own address space (the one each vCPU boots with). */
    public AddressSpace kernelSpace() {
        return kernelSpace;
    }

    /** Guest frame {@code gfn} of a restored state, checked against {@code vm}. */
    private static long frame(Vm vm, long gfn) {
        if (!vm.physicalMap().contains(gfn)) {
            throw new IllegalArgumentException("a guest kernel state names guest frame " + gfn + ", outside the VM");
        }
        return gfn;
    }

    /** Address space {@code index} in creation order (0: the kernel's), for a program's saved state. */
    AddressSpace space(int index) {
        return spaces.get(index);
    }

    /** {@link #space}'s inverse. */
    int indexOf(AddressSpace space) {
        return spaces.indexOf(space);
    }

    // ------------------------------------------------------------------ address spaces

    /** A new user address space: its own PML4 (sharing the kernel half) and PCID. */
    public AddressSpace createAddressSpace(Vcpu cpu) {
        lock(cpu);
        try {
            long root = allocateFrame(cpu);
            ops.prepareTable(cpu, root, Pte.LEVEL_PML4); // a table before any entry is written (PV pins it)
            for (int i = KERNEL_HALF; i < 512; i++) {
                long e = ops.readEntry(cpu, kernelRoot, i);
                if ((e & Pte.P) != 0) {
                    ops.writeEntry(cpu, root, i, e);
                }
            }
            int pcid = nextPcid++;
            if (pcid > 0xFFF) {
                throw new IllegalStateException("out of PCIDs");
            }
            AddressSpace space = new AddressSpace(this, root, pcid, running.length);
            spaces.add(space);
            return space;
        } finally {
            unlock();
        }
    }

    /**
     * Context switch: {@code cpu} runs {@code space} from now on. CR3 is loaded with the no-flush bit
     * unless a shootdown happened while this vCPU was elsewhere.
     */
    public void switchTo(Vcpu cpu, AddressSpace space) {
        lock(cpu);
        try {
            int i = cpu.index();
            boolean flush = space.staleOn[i];
            space.staleOn[i] = false;
            space.usedOn[i] = true;
            running[i] = space;
            ops.loadCr3(cpu, space.rootGfn, space.pcid, !flush);
        } finally {
            unlock();
        }
    }

    /** The address space {@code cpu} runs. */
    public AddressSpace current(Vcpu cpu) {
        return running[cpu.index()];
    }

    // ------------------------------------------------------------------ mappings

    /** Reserves [va, va+length) for anonymous memory: pages appear, zeroed, on first touch. */
    public void mmap(AddressSpace space, long va, long length, int prot) {
        checkRange(va, length);
        synchronized (space.vmas) {
            Map.Entry<Long, Vma> below = space.vmas.floorEntry(va + length - 1);
            if (below != null && below.getValue().end > va) {
                throw new IllegalArgumentException("range 0x" + Long.toHexString(va) + "+0x" + Long.toHexString(length)
                    + " overlaps an existing mapping");
            }
            space.vmas.put(va, new Vma(va, va + length, prot));
        }
    }

    /** Removes [va, va+length): entries cleared, TLBs shot down everywhere, frames freed. */
    public void munmap(Vcpu cpu, AddressSpace space, long va, long length) {
        checkRange(va, length);
        lock(cpu);
        try {
            space.replaceVmas(va, va + length, -1);
            List<Long> freed = new ArrayList<>();
            List<Long> changed = rewritePresentLeaves(cpu, space, va, length, e -> {
                freed.add(ops.frameOfEntry(e));
                return 0;
            });
            shootdown(cpu, space, changed);
            for (long gfn : freed) { // only after no vCPU can reach them any more
                releaseFrame(cpu, gfn);
            }
        } finally {
            unlock();
        }
    }

    /** Changes the protection of [va, va+length), rewriting present entries and shooting down TLBs. */
    public void mprotect(Vcpu cpu, AddressSpace space, long va, long length, int prot) {
        checkRange(va, length);
        lock(cpu);
        try {
            space.replaceVmas(va, va + length, prot);
            long bits = leafFlags(prot) & (Pte.RW | Pte.NX);
            shootdown(cpu, space, rewritePresentLeaves(cpu, space, va, length, e -> (e & ~(Pte.RW | Pte.NX)) | bits));
        } finally {
            unlock();
        }
    }

    /** Replaces each present leaf entry in [va, va+length) by {@code rewrite(entry)}; returns the pages changed. */
    private List<Long> rewritePresentLeaves(Vcpu cpu, AddressSpace space, long va, long length,
                                            java.util.function.LongUnaryOperator rewrite) {
        List<Long> changed = new ArrayList<>();
        for (long page = va; page < va + length; page += MachineMemory.FRAME_SIZE) {
            long at = leafSlot(cpu, space, page, false);
            if (at < 0) {
                continue;
            }
            long table = at >>> MachineMemory.FRAME_SHIFT;
            int index = (int) (at & MachineMemory.FRAME_OFFSET_MASK) >>> 3;
            long e = ops.readEntry(cpu, table, index);
            if ((e & Pte.P) != 0) {
                ops.writeEntry(cpu, table, index, rewrite.applyAsLong(e));
                changed.add(page);
            }
        }
        return changed;
    }

    /**
     * The kernel's #PF handler: a not-present fault inside a mapping gets a zeroed frame (demand-zero);
     * anything else (no mapping, a protection violation) is the program's fault.
     */
    boolean onPageFault(Vcpu cpu, long cr2, int errorCode) {
        AddressSpace space = running[cpu.index()];
        Vma vma = space.find(cr2);
        if (vma == null || (errorCode & Fault.PF_P) != 0) {
            return false;
        }
        if ((errorCode & Fault.PF_W) != 0 && (vma.prot & PROT_WRITE) == 0
            || (errorCode & Fault.PF_ID) != 0 && (vma.prot & PROT_EXEC) == 0) {
            return false;
        }
        lock(cpu);
        try {
            if (freeCount == 0 && balloon.releaseForOom() == 0) { // DEFLATE_ON_OOM first
                return false; // out of memory: the access fails, as an OOM-killed program's would
            }
            long page = cr2 & ~MachineMemory.FRAME_OFFSET_MASK;
            long at = leafSlot(cpu, space, page, true);
            long table = at >>> MachineMemory.FRAME_SHIFT;
            int index = (int) (at & MachineMemory.FRAME_OFFSET_MASK) >>> 3;
            if ((ops.readEntry(cpu, table, index) & Pte.P) == 0) { // another vCPU may have populated it meanwhile
                long gfn = allocateFrame(cpu);
                ops.writeEntry(cpu, table, index, Pte.entry(ops.entryFrame(cpu, gfn) << 12, leafFlags(vma.prot())));
            }
            return true;
        } finally {
            unlock();
        }
    }

    // ------------------------------------------------------------------ page-table walking (guest side)

    /**
     * Guest-physical address of the level-1 entry for {@code va} in {@code space} (gfn << 12 | offset),
     * creating tables when {@code create}, else -1 when a table on the way is missing.
     */
    private long leafSlot(Vcpu cpu, AddressSpace space, long va, boolean create) {
        long table = space.rootGfn;
        for (int level = Pte.LEVEL_PML4; level > Pte.LEVEL_PT; level--) {
            int index = Pte.index(va, level);
            long e = ops.readEntry(cpu, table, index);
            if ((e & Pte.P) == 0) {
                if (!create) {
                    return -1;
                }
                long next = allocateFrame(cpu);
                ops.prepareTable(cpu, next, level - 1);
                e = Pte.entry(ops.entryFrame(cpu, next) << 12, Pte.P | Pte.RW | Pte.US);
                ops.writeEntry(cpu, table, index, e);
            }
            table = ops.frameOfEntry(e);
        }
        return (table << 12) | ((long) Pte.index(va, Pte.LEVEL_PT) << 3);
    }

    private static long leafFlags(int prot) {
        long flags = Pte.P | Pte.US;
        if ((prot & PROT_WRITE) != 0) {
            flags |= Pte.RW;
        }
        if ((prot & PROT_EXEC) == 0) {
            flags |= Pte.NX;
        }
        return flags;
    }

    /**
     * Makes every vCPU forget the translations of {@code pages} in {@code space}: INVLPG here, an IPI to
     * each other vCPU running the space (waiting for its acknowledgment), and a deferred flush for vCPUs
     * that ran it before but run another space now.
     */
    private void shootdown(Vcpu cpu, AddressSpace space, List<Long> pages) {
        if (pages.isEmpty()) {
            return;
        }
        int self = cpu.index();
        if (running[self] == space) {
            for (long page : pages) {
                ops.invlpg(cpu, page);
            }
        } else if (space.usedOn[self]) {
            space.staleOn[self] = true;
        }
        List<Vcpu> targets = new ArrayList<>();
        List<Long> kicks = new ArrayList<>();
        for (Vcpu other : vm.vcpus()) {
            int i = other.index();
            if (i == self || !space.usedOn[i]) {
                continue;
            }
            if (running[i] == space) {
                targets.add(other);
                kicks.add(other.sendIpi(target -> {
                    for (long page : pages) {
                        ops.invlpg(target, page);
                    }
                }));
            } else {
                space.staleOn[i] = true;
            }
        }
        for (int i = 0; i < targets.size(); i++) {
            targets.get(i).awaitIpi(kicks.get(i));
        }
    }

    // ------------------------------------------------------------------ frames and the kernel lock

    private long allocateFrame(Vcpu cpu) {
        if (freeCount == 0 && balloon.releaseForOom() == 0) { // DEFLATE_ON_OOM: the balloon gives pages back first
            throw new GuestOutOfMemoryException("guest kernel of VM " + vm.id() + " has no free frame left");
        }
        long gfn = freeFrames[--freeCount];
        try {
            ops.zeroFrame(cpu, gfn);
        } catch (RuntimeException e) { // the host had no frame for it (HostOutOfMemoryException): the access retries later
            freeFrames[freeCount++] = gfn;
            throw e;
        }
        return gfn;
    }

    /** The kernel's virtio-balloon driver. */
    public BalloonDriver balloon() {
        return balloon;
    }

    /** Kernel lock held: a free frame for the balloon, as it is (the balloon never reads it). */
    long takeFreeFrame() {
        if (freeCount == 0) {
            throw new GuestOutOfMemoryException("guest kernel of VM " + vm.id() + " has no free frame left");
        }
        return freeFrames[--freeCount];
    }

    /** Kernel lock held: free frame {@code gfn} (from {@link #takeFreeFrame}) leaves the kernel's own mappings for the balloon. */
    void giveToBalloon(Vcpu cpu, long gfn) {
        ops.giveToBalloon(cpu, gfn);
    }

    /** Kernel lock held: a frame back from the balloon onto the free list. */
    void giveFreeFrame(long gfn) {
        freeFrames[freeCount++] = gfn;
    }

    /** Runs {@code work} on {@code cpu} inside the kernel (its lock, supervisor mode). */
    <T> T inKernel(Vcpu cpu, java.util.function.Supplier<T> work) {
        lock(cpu);
        try {
            return work.get();
        } finally {
            unlock();
        }
    }

    private void releaseFrame(Vcpu cpu, long gfn) {
        ops.releaseFrame(cpu, gfn);
        freeFrames[freeCount++] = gfn;
    }

    /** Nesting depth of the kernel lock by its owner. Guarded by the lock. */
    private int lockDepth;
    /** The owner's privilege level before it entered the kernel. Guarded by the lock. */
    private boolean ownerWasUser;

    /**
     * Enters the kernel on {@code cpu} (supervisor mode, as a system call or fault does) and takes the
     * kernel's big lock: a spinlock whose waiters keep serving IPIs. Re-entrant per vCPU.
     */
    private void lock(Vcpu cpu) {
        if (lockOwner.get() == cpu) {
            lockDepth++;
            return;
        }
        boolean wasUser = cpu.userMode();
        cpu.setUserMode(false);
        while (!lockOwner.compareAndSet(null, cpu)) {
            cpu.relax();
        }
        lockDepth = 1;
        ownerWasUser = wasUser;
    }

    private void unlock() {
        if (--lockDepth == 0) {
            Vcpu owner = lockOwner.get();
            boolean wasUser = ownerWasUser;
            lockOwner.set(null);
            owner.setUserMode(wasUser);
        }
    }

    private static void checkRange(long va, long length) {
        if ((va & MachineMemory.FRAME_OFFSET_MASK) != 0 || length <= 0 || (length & MachineMemory.FRAME_OFFSET_MASK) != 0
            || va < 0 || va + length > (1L << 47)) {
            throw new IllegalArgumentException("range 0x" + Long.toHexString(va) + "+0x" + Long.toHexString(length)
                + " must be page-aligned user space below 2^47");
        }
    }

    /** A user or kernel address space: its root table, PCID and mappings. */
    public static final class AddressSpace {
        final GuestKernel kernel;
        final long rootGfn;
        final int pcid;
        final TreeMap<Long, Vma> vmas = new TreeMap<>();
        /** Per vCPU: ran this space at some point (Linux's mm_cpumask). Guarded by the kernel lock. */
        final boolean[] usedOn;
        /** Per vCPU: must flush this PCID before running it again. Guarded by the kernel lock. */
        final boolean[] staleOn;

        AddressSpace(GuestKernel kernel, long rootGfn, int pcid, int vcpus) {
            this.kernel = kernel;
            this.rootGfn = rootGfn;
            this.pcid = pcid;
            this.usedOn = new boolean[vcpus];
            this.staleOn = new boolean[vcpus];
        }

        public int pcid() {
            return pcid;
        }

        /** Guest-physical address of the PML4. */
        public long root() {
            return rootGfn << MachineMemory.FRAME_SHIFT;
        }

        Vma find(long va) {
            synchronized (vmas) {
                Map.Entry<Long, Vma> e = vmas.floorEntry(va);
                return e != null && e.getValue().end > va ? e.getValue() : null;
            }
        }

        /** Cuts [start, end) out of the mappings; when {@code prot} >= 0 maps that part again with {@code prot}. */
        void replaceVmas(long start, long end, int prot) {
            synchronized (vmas) {
                for (Vma v : overlapping(start, end)) {
                    vmas.remove(v.start);
                    if (v.start < start) {
                        vmas.put(v.start, new Vma(v.start, start, v.prot));
                    }
                    if (prot >= 0) {
                        long from = Math.max(v.start, start);
                        vmas.put(from, new Vma(from, Math.min(v.end, end), prot));
                    }
                    if (v.end > end) {
                        vmas.put(end, new Vma(end, v.end, v.prot));
                    }
                }
            }
        }

        List<Vma> overlapping(long start, long end) {
            List<Vma> out = new ArrayList<>();
            Map.Entry<Long, Vma> first = vmas.floorEntry(start);
            Long from = first != null && first.getValue().end > start ? first.getKey() : Long.valueOf(start);
            for (Vma v : vmas.tailMap(from, true).values()) {
                if (v.start >= end) {
                    break;
                }
                if (v.end > start) {
                    out.add(v);
                }
            }
            return out;
        }
    }

    /** A mapped range of a user address space. */
    record Vma(long start, long end, int prot) {
    }
}
