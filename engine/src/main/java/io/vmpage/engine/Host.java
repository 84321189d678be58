package io.vmpage.engine;

import io.vmpage.engine.memory.FrameAllocator;
import io.vmpage.engine.memory.FrameDescriptor;
import io.vmpage.engine.memory.FrameTable;
import io.vmpage.engine.paging.FrameSharing;
import io.vmpage.mmu.MachineMemory;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * A physical host: machine memory, its frame table, and the VMs running on it. The engine's entry point
 * for an embedding program:
 * <pre>{@code
 * try (Host host = Host.create(256L << 20)) {
 *     Vm vm = host.createVm(VmConfig.of(64L << 20).withPaging(PagingMode.NESTED));
 *     ...
 * }
 * }</pre>
 */
public final class Host implements AutoCloseable {
    private final MachineMemory memory;
    private final FrameAllocator frames;
    private final List<Vm> vms = new ArrayList<>();
    /** VM ids (16 bits in a frame descriptor's owner field; 0 is the host itself). Under this host's lock. */
    private final IdSpace vmIds = new IdSpace("VM ids", 0xFFFF);
    /** vCPU VPIDs (16 bits, as VMX's; 0 tags the host's own translations). Under this host's lock. */
    private final IdSpace vpids = new IdSpace("VPIDs", 0xFFFF);
    /** Copy-on-write breaks ({@link #copyOnWriteBreaks}). Incremented by the breaking thread. */
    private final java.util.concurrent.atomic.AtomicLong copyOnWriteBreaks = new java.util.concurrent.atomic.AtomicLong();
    /** Machine frames shared copy-on-write right now. Updated by CAS winners only. */
    private final java.util.concurrent.atomic.AtomicLong sharedFrames = new java.util.concurrent.atomic.AtomicLong();
    /**
     * Guest frames that may map one shared frame; a merge beyond it is refused. Linux KSM's
     * {@code max_page_sharing} default (256): it bounds the reverse-map walk a copy-on-write break or a
     * reclaim of the frame costs, and keeps the count far from the descriptor's 16-bit reference field.
     */
    public static final int MAX_SHARERS = 256;
    /** Admission control's reservations (bytes). Guarded by this. */
    private long reservedMemory;
    private long reservedSwap;
    /** The swap device: set once under this host's lock, read by any thread (volatile). */
    private volatile io.vmpage.engine.swap.SwapDevice swap;
    /** The page-sharing scanner and its agent runner while one runs. Guarded by this. */
    private io.vmpage.engine.sharing.PageSharingScanner scanner;
    private org.agrona.concurrent.AgentRunner scannerRunner;
    private final java.util.concurrent.atomic.AtomicLong agentErrors = new java.util.concurrent.atomic.AtomicLong();
    /** The reclaimer and its agent runner while one runs. Guarded by this. */
    private io.vmpage.engine.policy.Reclaimer reclaimer;
    private org.agrona.concurrent.AgentRunner reclaimerRunner;
    /** One merge at a time (as KSM's single ksmd thread): merges of the same frames never interleave. */
    private final Object sharing = new Object();

    private Host(MachineMemory memory) {
        this.memory = memory;
        this.frames = new FrameAllocator(memory, 1); // frame 0 stays unused: a zero MFN never means "a real page"
    }

    /** A host with {@code memoryBytes} of machine memory. */
    public static Host create(long memoryBytes) {
        return new Host(MachineMemory.allocate(memoryBytes));
    }

    public MachineMemory memory() {
        return memory;
    }

    /** The frame table, read-only: descriptors, the machine-to-physical map, free frames. */
    public FrameTable frames() {
        return frames.table();
    }

    /** The frame table's mutating handle, for this host's VMs and their backends. */
    FrameAllocator allocator() {
        return frames;
    }

    /** Creates a VM; its guest memory is allocated on first touch. */
    public synchronized Vm createVm(VmConfig config) {
        int id = vmIds.take();
        int[] vcpuIds = new int[config.vcpus()];
        int taken = 0;
        try {
            while (taken < vcpuIds.length) {
                vcpuIds[taken] = vpids.take();
                taken++;
            }
            Vm vm = new Vm(this, id, config, vcpuIds);
            vms.add(vm);
            return vm;
        } catch (RuntimeException | Error e) {
            vmIds.give(id);
            for (int i = 0; i < taken; i++) {
                vpids.give(vcpuIds[i]);
            }
            throw e;
        }
    }

    // ------------------------------------------------------------------ admission control

    /**
     * Creates a VM under ESX's admission control: it is admitted only if the host can reserve its
     * {@code min} plus its overhead ({@link io.vmpage.engine.policy.Allocation#overheadBytes}) in machine
     * memory, and its {@code max - min} (the guest's memory above its guarantee) on the swap device, next
     * to what the VMs admitted before reserved. The reservations go when the VM is destroyed. VMs made
     * by {@link #createVm} reserve nothing and are not counted.
     *
     * @throws io.vmpage.engine.policy.AdmissionException when it does not fit; the message says what is short
     * @throws IllegalArgumentException when {@code min} is above the VM's memory
     */
    public synchronized Vm admitVm(VmConfig config, io.vmpage.engine.policy.Allocation allocation) {
        long max = config.memoryBytes();
        if (allocation.minBytes() > max) {
            throw new IllegalArgumentException("min " + (allocation.minBytes() >> 20) + " MiB is above the VM's memory of "
                + (max >> 20) + " MiB");
        }
        long overhead = io.vmpage.engine.policy.Allocation.overheadBytes(max, config.vcpus());
        long memoryNeeded = allocation.minBytes() + overhead;
        long swapNeeded = max - allocation.minBytes();
        long memoryLeft = memory.size() - reservedMemory;
        long swapBytes = swap == null ? 0 : swap.slots() << MachineMemory.FRAME_SHIFT;
        long swapLeft = swapBytes - reservedSwap;
        if (memoryNeeded > memoryLeft || swapNeeded > swapLeft) {
            StringBuilder why = new StringBuilder("admission control refuses a VM of " + mib(max) + " (min " + mib(allocation.minBytes())
                + ", overhead " + mib(overhead) + "):");
            if (memoryNeeded > memoryLeft) {
                why.append(" it needs ").append(mib(memoryNeeded)).append(" of machine memory reserved, ").append(mib(memoryLeft))
                    .append(" of the host's ").append(mib(memory.size())).append(" are unreserved;");
            }
            if (swapNeeded > swapLeft) {
                why.append(" it needs ").append(mib(swapNeeded)).append(" of swap for its memory above min, ")
                    .append(swap == null ? "and the host has no swap device" : mib(swapLeft) + " of the swap device's " + mib(swapBytes)
                        + " are unreserved").append(';');
            }
            why.setLength(why.length() - 1);
            throw new io.vmpage.engine.policy.AdmissionException(why.toString());
        }
        Vm vm = createVm(config);
        vm.admitted(allocation);
        reservedMemory += memoryNeeded;
        reservedSwap += swapNeeded;
        return vm;
    }

    /** Machine memory reserved for admitted VMs (their min and overhead). */
    public synchronized long reservedMemoryBytes() {
        return reservedMemory;
    }

    /** Swap reserved for admitted VMs (their max - min). */
    public synchronized long reservedSwapBytes() {
        return reservedSwap;
    }

    private static String mib(long bytes) {
        return (bytes + (1 << 20) - 1 >> 20) + " MiB";
    }

    /**
     * Destroys a VM and returns its frames. vCPUs still running are waited for until their current
     * access ends; afterwards every use of the VM's vCPUs, and every host-side access to its memory,
     * throws {@link IllegalStateException}.
     */
    public synchronized void destroyVm(Vm vm) {
        if (vms.remove(vm)) {
            synchronized (sharing) { // no merge is half-way through this VM's frames
                vm.destroy();
            }
            io.vmpage.engine.policy.Allocation allocation = vm.allocation();
            if (allocation != null) { // its reservations go with it
                reservedMemory -= allocation.minBytes()
                    + io.vmpage.engine.policy.Allocation.overheadBytes(vm.config().memoryBytes(), vm.config().vcpus());
                reservedSwap -= vm.config().memoryBytes() - allocation.minBytes();
            }
            vmIds.give(vm.id()); // every frame it owned is free again: a later VM may carry the id
            for (Vcpu v : vm.vcpus()) {
                vpids.give(v.vpid());
            }
        }
    }

    /** The VM with id {@code id} running on this host, or null (without copying the VM list). */
    public synchronized Vm vm(int id) {
        for (int i = 0; i < vms.size(); i++) {
            if (vms.get(i).id() == id) {
                return vms.get(i);
            }
        }
        return null;
    }

    /** Whether {@code vm} runs on this host (not destroyed), without copying the VM list. */
    private synchronized boolean runs(Vm vm) {
        return vms.contains(vm);
    }

    public synchronized List<Vm> vms() {
        return Collections.unmodifiableList(new ArrayList<>(vms));
    }

    // ------------------------------------------------------------------ copy-on-write page sharing

    /**
     * Content-based page sharing (ESX's transparent page sharing, Linux KSM's merge): if guest frame
     * {@code gfnA} of {@code a} and {@code gfnB} of {@code b} hold the same bytes, both come to map one
     * machine frame read-only and the other frame returns to the host; the next write to either, by a
     * vCPU or the host, exits and gets a private copy ({@link ExitReason#COPY_ON_WRITE}). The VMs may be
     * the same VM. Safe while their vCPUs run: both frames are write-protected and every vCPU flushed
     * before the compare, and a write that lands between compare and remap makes the merge give up.
     *
     * @return true when the frames are shared now, false when they differ, are not populated, a write
     *     raced with the merge, or {@code a}'s frame already has {@link #MAX_SHARERS} sharers
     * @throws IllegalArgumentException when a VM is not on this host, a frame is outside its VM, or a
     *     VM uses paravirtual paging (Xen does not share PV memory: its page tables hold machine frames)
     */
    public boolean share(Vm a, long gfnA, Vm b, long gfnB) {
        FrameSharing na = sharingBackend(a, gfnA);
        FrameSharing nb = sharingBackend(b, gfnB);
        if (a == b && gfnA == gfnB) {
            return false;
        }
        synchronized (sharing) {
            if (a.destroyed() || b.destroyed()) {
                throw new IllegalArgumentException((a.destroyed() ? a : b) + " was destroyed");
            }
            long ma = na.writeProtectForSharing(gfnA);
            long mb = nb.writeProtectForSharing(gfnB);
            if (ma < 0 || mb < 0) {
                return false;
            }
            if (ma == mb) {
                return true;
            }
            a.flushRemoteTlbs(); // no vCPU can write either frame from here on without an exit...
            a.awaitHostAccesses(); // ...nor a host store: those still in flight have landed, later ones make
            if (b != a) {          // the leaf writable again (NestedPaging.beforeHostStore) and the merge give up
                b.flushRemoteTlbs();
                b.awaitHostAccesses();
            }
            if (!memory.frameEquals(ma, mb)) {
                return false; // the leaves stay read-only: the next write exits and gets write access back
            }
            if (!na.mapShared(gfnA, ma, ma)) { // a's frame becomes (or already is) the shared one
                return false;
            }
            return join(ma, nb, b, gfnB, mb);
        }
    }

    /**
     * Content-based sharing into an existing shared frame (ESX's match against a "shared frame" entry of
     * its hash table, which holds the machine frame): if guest frame {@code gfn} of {@code vm} holds the
     * same bytes as shared frame {@code sharedFrame}, it comes to map that frame read-only and its own
     * frame returns to the host. Safe while the VM's vCPUs run, as {@link #share} is.
     *
     * @return true when {@code gfn} maps {@code sharedFrame} now; false when the frame is no longer a
     *     shared frame (its sharers all wrote or went), the contents differ, {@code gfn} is not populated,
     *     a write raced with the merge, or the frame has {@link #MAX_SHARERS} sharers
     * @throws IllegalArgumentException as {@link #share} does, or when {@code sharedFrame} is not a
     *     frame of this host
     */
    public boolean joinShared(long sharedFrame, Vm vm, long gfn) {
        FrameSharing sharing = sharingBackend(vm, gfn);
        if (sharedFrame < 0 || sharedFrame >= frames.table().frames()) {
            throw new IllegalArgumentException("machine frame " + sharedFrame + " is not a frame of this host");
        }
        synchronized (this.sharing) {
            if (vm.destroyed()) {
                throw new IllegalArgumentException(vm + " was destroyed");
            }
            long d = frames.descriptor(sharedFrame);
            if (FrameDescriptor.type(d) != FrameDescriptor.TYPE_SHARED || FrameDescriptor.isFree(d)) {
                return false;
            }
            long mine = sharing.writeProtectForSharing(gfn);
            if (mine < 0) {
                return false;
            }
            if (mine == sharedFrame) {
                return true;
            }
            vm.flushRemoteTlbs(); // no vCPU nor host store can write gfn's frame now without making the merge give up
            vm.awaitHostAccesses();
            if (!memory.frameEquals(sharedFrame, mine)) {
                return false; // the leaf stays read-only: the next write exits and gets write access back
            }
            return join(sharedFrame, sharing, vm, gfn, mine);
        }
    }

    /**
     * Under the sharing lock, after the compare: guest frame {@code gfn} of {@code b}, write-protected and
     * backed by {@code mine}, maps {@code shared} from now on and {@code mine} goes back to the host.
     */
    private boolean join(long shared, FrameSharing nb, Vm b, long gfn, long mine) {
        if (!takeSharedReference(shared)) {
            return false; // the last sharer wrote its page meanwhile and took the frame back, or the frame is at the cap
        }
        if (!nb.mapShared(gfn, mine, shared)) {
            dropSharedReference(shared);
            return false;
        }
        b.flushRemoteTlbs(); // b's vCPUs stop using its old frame...
        b.releaseFrame(mine); // ...before the frame goes back to the host (or loses a sharer)
        return true;
    }

    /** Copy-on-write breaks so far: writes (by vCPUs or the host) that gave a guest frame a private frame again. */
    public long copyOnWriteBreaks() {
        return copyOnWriteBreaks.get();
    }

    void copyOnWriteBroken() {
        copyOnWriteBreaks.incrementAndGet();
    }

    /**
     * Guest frames mapping a shared frame right now (a walk of the frame table): the bytes sharing saves
     * are {@code (sharers - sharedFrames) x 4 KiB}.
     */
    public long sharers() {
        long n = 0;
        FrameTable table = frames.table();
        for (long f = 0; f < table.frames(); f++) {
            long d = table.descriptor(f);
            if (FrameDescriptor.type(d) == FrameDescriptor.TYPE_SHARED && !FrameDescriptor.isFree(d)) {
                n += FrameDescriptor.refs(d);
            }
        }
        return n;
    }

    /** Machine frames currently shared copy-on-write. */
    public long sharedFrames() {
        return sharedFrames.get();
    }

    private FrameSharing sharingBackend(Vm vm, long gfn) {
        if (vm.host() != this || !runs(vm)) {
            throw new IllegalArgumentException(vm + " does not run on this host");
        }
        if (!vm.physicalMap().contains(gfn)) {
            throw new IllegalArgumentException("guest frame 0x" + Long.toHexString(gfn) + " is outside " + vm + "'s memory");
        }
        FrameSharing sharing = vm.backend().sharing();
        if (sharing == null && vm.pagingMode() == PagingMode.PARAVIRTUAL) {
            throw new IllegalArgumentException("page sharing does not apply to " + vm + ": a paravirtual guest's page tables"
                + " hold machine frames, so its memory is not shared (Xen does not share PV memory)");
        }
        if (sharing == null) {
            throw new IllegalArgumentException("page sharing needs paging mode NESTED or SHADOW; " + vm + " runs " + vm.pagingMode());
        }
        return sharing;
    }

    void sharedFrameCreated() {
        sharedFrames.incrementAndGet();
    }

    void sharedFrameReleased() {
        sharedFrames.decrementAndGet();
    }

    /**
     * Takes one more mapping's reference on {@code mfn} if it is (still) a shared frame below the cap:
     * between the first mapper's leaf turning copy-on-write and this call, a write by that mapper may
     * have taken the frame back as its private frame (the last mapper keeps it), and then it must not
     * gain a second mapper.
     */
    private boolean takeSharedReference(long mfn) {
        while (true) {
            long d = frames.descriptor(mfn);
            if (FrameDescriptor.type(d) != FrameDescriptor.TYPE_SHARED || FrameDescriptor.isFree(d) || FrameDescriptor.refs(d) >= MAX_SHARERS) {
                return false;
            }
            if (frames.compareAndSetDescriptor(mfn, d, d + FrameDescriptor.REF_ONE)) {
                return true;
            }
        }
    }

    /** Drops one mapping of shared frame {@code mfn}; the last one frees it. Callers flushed TLBs first. */
    void dropSharedReference(long mfn) {
        while (true) {
            long d = frames.descriptor(mfn);
            if (FrameDescriptor.type(d) != FrameDescriptor.TYPE_SHARED) {
                throw new IllegalStateException("machine frame " + mfn + " is not shared");
            }
            if (FrameDescriptor.refs(d) == 1) {
                if (frames.compareAndSetDescriptor(mfn, d, d - FrameDescriptor.REF_ONE)) {
                    sharedFrames.decrementAndGet();
                    frames.free(mfn);
                    return;
                }
            } else if (frames.compareAndSetDescriptor(mfn, d, d - FrameDescriptor.REF_ONE)) {
                return;
            }
        }
    }

    /**
     * Ids 1..max, handed out as Xen hands out domain ids: the next free one after the last one given,
     * wrapping around, so a freed id comes back as late as possible (a stale handle or log line names a
     * new VM only after every other id was used). KVM likewise frees a vCPU's VPID when the vCPU goes and
     * reuses it from its bitmap; here each vCPU has its own TLB, so a reused VPID finds no stale entries.
     * Not thread-safe: the host's lock guards both spaces.
     */
    private static final class IdSpace {
        private final String what;
        private final int max;
        private final java.util.BitSet used = new java.util.BitSet();
        private int last;

        IdSpace(String what, int max) {
            this.what = what;
            this.max = max;
        }

        int take() {
            int id = used.nextClearBit(last + 1);
            if (id > max) {
                id = used.nextClearBit(1);
            }
            if (id > max) {
                throw new IllegalStateException("no " + what + " left: " + max + " are in use on this host");
            }
            used.set(id);
            last = id;
            return id;
        }

        void give(int id) {
            used.clear(id);
        }
    }

    /** A zeroed host frame for a paging structure (EPT or shadow table), charged to {@code vmId}. */
    long allocateTableFrame(int vmId) {
        long frame = frames.allocate(vmId, FrameDescriptor.TYPE_HOST_TABLE);
        if (frame < 0) {
            throw new HostOutOfMemoryException("host out of machine frames for a paging structure");
        }
        return frame;
    }

    // ------------------------------------------------------------------ host swap

    /**
     * Gives this host a swap device ({@link Vm#swapOut} swaps frames out to it, a touch swaps them back
     * in); the host closes it when it closes.
     *
     * @throws IllegalStateException when it has one already
     */
    public synchronized void attachSwap(io.vmpage.engine.swap.SwapDevice device) {
        if (swap != null) {
            throw new IllegalStateException("host has a swap device already: " + swap);
        }
        swap = java.util.Objects.requireNonNull(device, "swap device");
    }

    /** The host's swap device, or null. */
    public io.vmpage.engine.swap.SwapDevice swap() {
        return swap;
    }

    // ------------------------------------------------------------------ the page-sharing scanner

    /**
     * Starts content-based page sharing: a {@link io.vmpage.engine.sharing.PageSharingScanner} on a
     * thread of its own (an Agrona agent, idling 1 ms between calls with nothing to do), until
     * {@link #stopPageSharing} or {@link #close}.
     *
     * @throws IllegalStateException when a scanner runs already
     */
    public synchronized io.vmpage.engine.sharing.PageSharingScanner startPageSharing(io.vmpage.engine.sharing.SharingConfig config) {
        if (scanner != null) {
            throw new IllegalStateException("page sharing runs already on this host: stop it first");
        }
        io.vmpage.engine.sharing.PageSharingScanner s = new io.vmpage.engine.sharing.PageSharingScanner(this, config);
        scannerRunner = startAgent(s);
        scanner = s;
        return s;
    }

    /** Runs {@code agent} on a daemon thread of its own named after its role, idling 1 ms when it has nothing to do. */
    private org.agrona.concurrent.AgentRunner startAgent(org.agrona.concurrent.Agent agent) {
        org.agrona.concurrent.AgentRunner runner = new org.agrona.concurrent.AgentRunner(
            new org.agrona.concurrent.SleepingMillisIdleStrategy(1), error -> agentErrors.incrementAndGet(), null, agent);
        org.agrona.concurrent.AgentRunner.startOnThread(runner, r -> {
            Thread t = new Thread(r, agent.roleName());
            t.setDaemon(true);
            return t;
        });
        return runner;
    }

    /**
     * Starts ESX's dynamic reallocation: an {@link io.vmpage.engine.policy.Reclaimer} on a thread of its own
     * until {@link #stopReclaimer} or {@link #close}.
     *
     * @throws IllegalStateException when one runs already
     */
    public synchronized io.vmpage.engine.policy.Reclaimer startReclaimer(io.vmpage.engine.policy.Reclaimer.Config config) {
        if (reclaimer != null) {
            throw new IllegalStateException("a reclaimer runs already on this host: stop it first");
        }
        io.vmpage.engine.policy.Reclaimer r = new io.vmpage.engine.policy.Reclaimer(this, config);
        reclaimerRunner = startAgent(r);
        reclaimer = r;
        return r;
    }

    /** Stops the reclaimer (waits for its thread). No-op when none runs. */
    public void stopReclaimer() {
        org.agrona.concurrent.AgentRunner runner;
        synchronized (this) {
            runner = reclaimerRunner;
            reclaimerRunner = null;
            reclaimer = null;
        }
        if (runner != null) {
            runner.close();
        }
    }

    /** The running reclaimer, or null. */
    public synchronized io.vmpage.engine.policy.Reclaimer reclaimer() {
        return reclaimer;
    }

    /** Stops the page-sharing scanner (waits for its thread); shared frames stay shared. No-op when none runs. */
    public void stopPageSharing() {
        org.agrona.concurrent.AgentRunner runner;
        synchronized (this) {
            runner = scannerRunner;
            scannerRunner = null;
            scanner = null;
        }
        if (runner != null) {
            runner.close(); // outside the host's lock: the scanner's step may be waiting for it (vms())
        }
    }

    /** The running page-sharing scanner, or null. */
    public synchronized io.vmpage.engine.sharing.PageSharingScanner pageSharing() {
        return scanner;
    }

    /** Errors the host's agents (the scanner, the reclaimer) hit: an engine bug if ever non-zero. */
    public long agentErrors() {
        return agentErrors.get();
    }

    /**
     * Stops the host's agents, destroys every VM and frees the host's memory. Closing is also the frame
     * audit: a host whose frames or swap slots do not all come back once its VMs are gone has leaked them.
     *
     * @throws IllegalStateException when frames or swap slots leaked (the memory is freed all the same)
     */
    @Override
    public void close() {
        stopReclaimer();
        stopPageSharing();
        closeVms();
    }

    /**
     * Destroys every VM, then checks the frame accounting balances (every machine frame but frame 0 free,
     * every swap slot free: a destroyed VM leaves nothing behind) before the memory goes.
     *
     * @throws IllegalStateException when it does not balance: the engine leaked frames or slots (the
     *     host's memory is released all the same)
     */
    private synchronized void closeVms() {
        for (Vm vm : new ArrayList<>(vms)) {
            destroyVm(vm);
        }
        long leakedFrames = frames.frames() - 1 - frames.table().freeFrames();
        long leakedSlots = swap == null ? 0 : swap.usedSlots();
        if (swap != null) {
            swap.close();
        }
        memory.close();
        if (leakedFrames != 0 || leakedSlots != 0) {
            throw new IllegalStateException("host closed with " + leakedFrames + " machine frames and " + leakedSlots
                + " swap slots still in use after every VM was destroyed: they leaked");
        }
    }
}
