package io.vmpage.engine;

import io.vmpage.engine.dirty.DirtyBitmap;
import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.dirty.DirtySnapshot;
import io.vmpage.engine.dirty.DirtyTracking;
import io.vmpage.engine.memory.FrameAllocator;
import io.vmpage.engine.memory.FrameDescriptor;
import io.vmpage.engine.memory.GuestPhysicalMap;
import io.vmpage.engine.memory.P2mEntry;
import io.vmpage.engine.memory.PhysicalMapWriter;
import io.vmpage.engine.paging.FrameSharing;
import io.vmpage.engine.paging.PagingBackend;
import io.vmpage.engine.paging.VmContext;
import io.vmpage.mmu.MachineMemory;
import java.util.ArrayList;
import java.util.Collections;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A virtual machine: guest-physical memory populated on first touch, vCPUs, and the paging backend of
 * its mode. Guest-physical accesses from the host side ({@link #readPhysicalLong} and friends) are what
 * firmware, a bootloader, device emulation or migration use; the guest itself accesses memory through
 * its {@link Vcpu}s.
 */
public final class Vm {
    private final Host host;
    private final int id;
    private final VmConfig config;
    private final PhysicalMapWriter p2mWriter;
    private final GuestPhysicalMap p2m;
    private final PagingBackend backend;
    private final DirtyLog.Writer dirty;
    private final DirtyLog dirtyLog;
    private final List<Vcpu> vcpus;
    /** Machine frames backing guest memory (not counting the engine's own tables). Many writers: atomic. */
    private final AtomicLong populatedFrames = new AtomicLong();
    /** Set once by {@link #destroy}, before the vCPUs are retired; read by every populate and host access. */
    private volatile boolean destroyed;
    /** Serializes pause, resume, throttle changes and state transfer. */
    private final Object pauseControl = new Object();
    /** Set by {@link #pause} before it kicks the vCPUs; read by each vCPU when it serves a request. */
    private volatile boolean paused;
    /**
     * Set once, by the first vCPU to enter guest mode; never cleared. Until then no TLB, EPT entry or
     * shadow page can hold a translation of any frame, so a paused VM's frames may be dropped outright
     * ({@link #markRemote}). Read and written plainly after the first time (a volatile read per entry).
     */
    private volatile boolean entered;
    /** Brings in frames that are not here; read by whoever touches one. */
    private volatile FrameFetcher fetcher;
    /** Throttle in percent, written under {@link #pauseControl}, read by the throttle thread. */
    private volatile int throttlePercent;
    /** The throttle timer thread while one runs. Guarded by {@link #pauseControl}. */
    private Thread throttler;
    /** Host-side accesses in flight: a frame leaving the VM waits for them ({@link #releaseFrame}). */
    private final HostAccesses hostAccesses = new HostAccesses();
    /** Admission control's promise; set once by the host before the VM is handed out. */
    private volatile io.vmpage.engine.policy.Allocation allocation;
    /** Guest frames on swap ({@link #swappedFrames}). */
    private final java.util.concurrent.atomic.AtomicLong swappedFrames = new java.util.concurrent.atomic.AtomicLong();
    /** The virtio-balloon device. */
    private final Balloon balloon = new Balloon(this);
    /** Guest touches of ballooned frames ({@link Balloon#touchedWhileBallooned}). Incremented by the toucher. */
    private final java.util.concurrent.atomic.AtomicLong balloonTouches = new java.util.concurrent.atomic.AtomicLong();
    /** Page-sharing domain ({@link #setSharingDomain}): written by the embedder, read by a scanner thread (volatile). */
    private volatile String sharingDomain;

    /** A VM with id {@code id} whose vCPU {@code i} has VPID {@code vpids[i]} (the host hands out both). */
    Vm(Host host, int id, VmConfig config, int[] vpids) {
        this.host = host;
        this.id = id;
        this.config = config;
        this.p2mWriter = new PhysicalMapWriter(config.memoryBytes() >>> MachineMemory.FRAME_SHIFT);
        this.p2m = p2mWriter.map();
        this.dirty = DirtyLog.Writer.create(new Logged());
        this.dirtyLog = dirty.log();
        this.backend = PagingBackend.create(new Context());
        List<Vcpu> list = new ArrayList<>();
        for (int i = 0; i < config.vcpus(); i++) {
            Vcpu vcpu = new Vcpu(this, i, vpids[i]);
            backend.attach(vcpu.context());
            list.add(vcpu);
        }
        this.vcpus = Collections.unmodifiableList(list);
    }

    public int id() {
        return id;
    }

    public Host host() {
        return host;
    }

    public VmConfig config() {
        return config;
    }

    public PagingMode pagingMode() {
        return config.paging();
    }

    public List<Vcpu> vcpus() {
        return vcpus;
    }

    public Vcpu vcpu(int index) {
        return vcpus.get(index);
    }

    /** Guest-physical memory size in bytes. */
    public long memorySize() {
        return config.memoryBytes();
    }

    /** The physical-to-machine map (read-only use outside the engine). */
    public GuestPhysicalMap physicalMap() {
        return p2m;
    }

    /** Machine frames privately backing this VM's guest memory (not counting shared frames it maps). */
    public long populatedFrames() {
        return populatedFrames.get();
    }

    /** Exit counts by reason, summed over the vCPUs (a snapshot; counts of running vCPUs may lag). */
    public Map<ExitReason, Long> exits() {
        Map<ExitReason, Long> sum = new EnumMap<>(ExitReason.class);
        for (ExitReason r : ExitReason.values()) {
            long n = 0;
            for (Vcpu v : vcpus) {
                n += v.exitCount(r);
            }
            sum.put(r, n);
        }
        return sum;
    }

    /** This VM's dirty log (off until {@link DirtyLog#enable}). */
    public DirtyLog dirtyLog() {
        return dirtyLog;
    }

    PagingBackend backend() {
        return backend;
    }

    /** The engine side of the dirty log (the vCPUs' exits and emulated writes mark through it). */
    DirtyLog.Writer dirtyWriter() {
        return dirty;
    }

    // ------------------------------------------------------------------ guest-physical memory

    /**
     * The machine frame backing guest frame {@code gfn}, allocated (zero-filled) on first touch.
     *
     * @throws GuestFaultException with {@code MACHINE_CHECK} when {@code gfn} is beyond guest memory
     * @throws HostOutOfMemoryException when the host has no frame left
     */
    long populate(long gfn) {
        long mfn = populateIfHere(gfn);
        return mfn == NOT_HERE ? bringIn(gfn) : mfn;
    }

    /**
     * {@link #populate}, but {@link #NOT_HERE} instead of bringing in a frame whose contents are elsewhere:
     * what a host store calls inside its host access, which must not wait there for a swap-out (that
     * waits for the host accesses to end) nor for a fetch.
     */
    private long populateIfHere(long gfn) {
        if (!p2m.contains(gfn)) {
            throw new GuestFaultException(io.vmpage.mmu.Fault.MACHINE_CHECK, 0, gfn << MachineMemory.FRAME_SHIFT);
        }
        long entry = p2m.entry(gfn);
        long mfn = P2mEntry.frame(entry);
        if (mfn >= 0) {
            return mfn;
        }
        if (entry != P2mEntry.EMPTY) {
            return NOT_HERE;
        }
        int access = hostAccesses.enter(); // a destroy waits for a populate that passed its check
        try {
            checkAlive();
            long frame = host.allocator().allocate(id, FrameDescriptor.TYPE_DATA);
            if (frame < 0) {
                throw new HostOutOfMemoryException("host out of machine frames populating guest frame 0x"
                    + Long.toHexString(gfn) + " of VM " + id);
            }
            host.allocator().setGuestFrame(frame, gfn);
            if (p2mWriter.install(gfn, frame)) {
                populatedFrames.incrementAndGet();
                return frame;
            }
            host.allocator().free(frame); // another vCPU populated it first
            long winner = p2m.machineFrame(gfn);
            return winner >= 0 ? winner : NOT_HERE; // it became something else meanwhile (marked remote)
        } finally {
            hostAccesses.exit(access);
        }
    }

    /**
     * Fetch on fault: guest frame {@code gfn} is not here ({@link P2mEntry#REMOTE}, {@link P2mEntry#SWAPPED}).
     * The first thread to touch it claims the entry ({@link P2mEntry#FETCHING}), fills a fresh frame
     * through the {@link FrameFetcher} outside any host access (a fetch may block on a network), and
     * installs it; other threads wait for the install. Returns the frame.
     */
    private long bringIn(long gfn) {
        for (int spins = 1; ; spins++) {
            long e = p2m.entry(gfn);
            if (P2mEntry.isPresent(e)) {
                return P2mEntry.frame(e);
            }
            if (e == P2mEntry.EMPTY) {
                return populate(gfn);
            }
            int kind = P2mEntry.kind(e);
            if (kind == P2mEntry.FETCHING) { // another thread brings it in (or swaps it out)
                checkAlive(); // a destroyed VM's frames go nowhere: never wait for one
                Vcpu self = Vcpu.current();
                if (self != null) {
                    self.serviceRequestsWhileWaiting(); // maybe inside a host access or an exit: never held here
                }
                Thread.onSpinWait();
                if ((spins & 63) == 0) {
                    Thread.yield();
                }
                continue;
            }
            if (kind == P2mEntry.BALLOONED) { // a guest touching its balloon: a fresh zero frame (ESX, virtio-balloon)
                if (p2mWriter.compareAndSet(gfn, e, P2mEntry.EMPTY)) {
                    balloonTouches.incrementAndGet();
                }
                continue;
            }
            FrameFetcher f = kind == P2mEntry.SWAPPED ? host.swap() : fetcher; // one fetch-on-fault path for both
            if (f == null) {
                throw new IllegalStateException("guest frame 0x" + Long.toHexString(gfn) + " of VM " + id + " is "
                    + P2mEntry.describe(e) + " and no frame fetcher is set to bring it in");
            }
            long payload = P2mEntry.payloadOf(e);
            if (!p2mWriter.compareAndSet(gfn, e, P2mEntry.notPresent(P2mEntry.FETCHING, payload))) {
                continue;
            }
            return fetchClaimed(gfn, e, kind, payload, f, null, 0);
        }
    }

    /**
     * {@link #bringIn} after this thread claimed the entry (it was {@code previous}): fills a fresh frame
     * through {@code f}, or from {@code arrived} when {@code f} is null, and installs it.
     */
    private long fetchClaimed(long gfn, long previous, int kind, long payload, FrameFetcher f, byte[] arrived, int arrivedOffset) {
        long claimed = P2mEntry.notPresent(P2mEntry.FETCHING, payload);
        long frame;
        int access = hostAccesses.enter();
        try {
            frame = destroyed ? -1 : host.allocator().allocate(id, FrameDescriptor.TYPE_DATA);
        } finally {
            hostAccesses.exit(access);
        }
        if (frame < 0) {
            p2mWriter.compareAndSet(gfn, claimed, previous);
            checkAlive();
            throw new HostOutOfMemoryException("host out of machine frames bringing in guest frame 0x" + Long.toHexString(gfn)
                + " of VM " + id);
        }
        try {
            if (f != null) {
                f.fetch(gfn, kind, payload, host.memory(), frame << MachineMemory.FRAME_SHIFT);
            } else {
                host.memory().putBytes(frame << MachineMemory.FRAME_SHIFT, arrived, arrivedOffset, MachineMemory.FRAME_SIZE);
            }
        } catch (RuntimeException | Error failure) {
            host.allocator().free(frame);
            p2mWriter.compareAndSet(gfn, claimed, previous); // still not here: a later touch tries again
            throw failure;
        }
        access = hostAccesses.enter(); // a destroy waits for the install, or this sees it and gives the frame back
        try {
            if (destroyed) {
                host.allocator().free(frame);
                checkAlive();
            }
            host.allocator().setGuestFrame(frame, gfn);
            if (!p2mWriter.compareAndSet(gfn, claimed, P2mEntry.privateFrame(frame))) {
                throw new IllegalStateException("guest frame 0x" + Long.toHexString(gfn) + " of VM " + id
                    + " changed while it was being brought in");
            }
            populatedFrames.incrementAndGet();
            if (kind == P2mEntry.SWAPPED) {
                swappedFrames.decrementAndGet();
            }
            return frame;
        } finally {
            hostAccesses.exit(access);
        }
    }

    /**
     * Marks guest frame {@code gfn} as not here yet ({@link P2mEntry#REMOTE}): a post-copy destination
     * marks every frame the source still has, and the first touch of one calls the {@link FrameFetcher}.
     * A populated frame is dropped first, when the VM is paused and no vCPU ever entered guest mode (so
     * nothing holds a translation of it): what a hybrid migration's destination does to the pages
     * pre-copy sent that the guest wrote again (QEMU's postcopy discard, {@code MIG_CMD_POSTCOPY_RAM_DISCARD},
     * applied before the destination VM first runs).
     *
     * @throws IllegalStateException when the frame is populated and the VM ran or is not paused, or the
     *     frame is shared or in another state
     */
    public void markRemote(long gfn) {
        checkFrame(gfn);
        checkAlive();
        long e = p2m.entry(gfn);
        if (e != P2mEntry.EMPTY && P2mEntry.isPresent(e) && P2mEntry.kind(e) == P2mEntry.PRIVATE) {
            synchronized (pauseControl) { // no resume meanwhile
                if (!paused || entered) {
                    throw new IllegalStateException("guest frame 0x" + Long.toHexString(gfn) + " of VM " + id + " is populated:"
                        + " its copy can be dropped for a remote one only while the VM is paused and has never run");
                }
                long mfn = P2mEntry.frame(e);
                if (!p2mWriter.compareAndSet(gfn, e, P2mEntry.notPresent(P2mEntry.REMOTE, 0))) {
                    throw new IllegalStateException("guest frame 0x" + Long.toHexString(gfn) + " of VM " + id
                        + " changed while it was marked remote");
                }
                dirty.markHost(gfn);
                releaseFrame(mfn); // a host access may still read the old copy: it finishes first
            }
            return;
        }
        if (!p2mWriter.compareAndSet(gfn, P2mEntry.EMPTY, P2mEntry.notPresent(P2mEntry.REMOTE, 0))) {
            throw new IllegalStateException("guest frame 0x" + Long.toHexString(gfn) + " of VM " + id + " is "
                + P2mEntry.describe(p2m.entry(gfn)) + ", not empty: it cannot be marked remote");
        }
    }

    /** A vCPU enters guest mode (see {@link #entered}). */
    void noteEntered() {
        if (!entered) {
            entered = true;
        }
    }

    /**
     * Installs the contents of guest frame {@code gfn}, not here yet ({@link P2mEntry#REMOTE}), as they
     * arrive without being asked for (a post-copy destination's background pages): {@code page} from
     * {@code offset}, 4096 bytes. False, nothing changed, when the frame is no longer remote: a touch is
     * bringing it in through the {@link FrameFetcher} (which then gets these bytes its own way), or it is here.
     */
    public boolean receiveFrame(long gfn, byte[] page, int offset) {
        checkFrame(gfn);
        java.util.Objects.checkFromIndexSize(offset, MachineMemory.FRAME_SIZE, page.length);
        long e = p2m.entry(gfn);
        if (P2mEntry.isPresent(e) || P2mEntry.kind(e) != P2mEntry.REMOTE) {
            return false;
        }
        long payload = P2mEntry.payloadOf(e);
        if (!p2mWriter.compareAndSet(gfn, e, P2mEntry.notPresent(P2mEntry.FETCHING, payload))) {
            return false;
        }
        fetchClaimed(gfn, e, P2mEntry.REMOTE, payload, null, page, offset);
        return true;
    }

    /** Sets the {@link FrameFetcher} that brings in frames that are not here (null: none). */
    public void setFrameFetcher(FrameFetcher fetcher) {
        this.fetcher = fetcher;
    }

    /**
     * Brings guest frame {@code gfn} in now if it is not here (what a host access does before it looks
     * the frame up, outside any host access, since a fetch may block).
     */
    private void bringInIfAbsent(long gfn) {
        long e = p2m.entry(gfn);
        if (e != P2mEntry.EMPTY && !P2mEntry.isPresent(e) && P2mEntry.kind(e) != P2mEntry.BALLOONED) {
            bringIn(gfn); // a ballooned frame reads as zeros: a host read (a migration's copy) leaves it in the balloon
        }
    }

    private void checkFrame(long gfn) {
        if (!p2m.contains(gfn)) {
            throw new IllegalArgumentException("guest frame 0x" + Long.toHexString(gfn) + " is outside VM " + id + "'s memory");
        }
    }

    /**
     * Gives back a machine frame already removed from this VM's p2m (a shared frame loses one mapping);
     * callers flushed every vCPU first. Waits for host-side accesses that may still use the frame
     * ({@link HostAccesses}), so neither a vCPU nor the host can touch it once it is reused.
     */
    void releaseFrame(long mfn) {
        hostAccesses.synchronize();
        freeUnmappedFrame(mfn);
    }

    /** Waits for the host-side accesses in flight (see {@link HostAccesses}); never from inside one. */
    void awaitHostAccesses() {
        hostAccesses.synchronize();
    }

    /** As {@link #releaseFrame}, when no vCPU or host access can reach the frame any more. */
    private void freeUnmappedFrame(long mfn) {
        if (FrameDescriptor.type(host.allocator().descriptor(mfn)) == FrameDescriptor.TYPE_SHARED) {
            host.dropSharedReference(mfn);
            return;
        }
        host.allocator().free(mfn);
        populatedFrames.decrementAndGet();
    }

    /**
     * Starts a host-side store to guest frame {@code gfn}: enters a host access and returns it with the
     * private, populated frame the store may write, packed as {@code mfn << 4 | slot} (end it with
     * {@link #endStore}). A shared frame is copied first, outside any host access, since breaking sharing
     * waits for host accesses ({@link #releaseFrame}).
     */
    private long beginStore(long gfn) {
        bringInIfAbsent(gfn); // a host store to a frame not here writes its real contents, brought in first
        while (true) {
            int access = hostAccesses.enter();
            boolean ok = false;
            try {
                checkAlive();
                long mfn = populateIfHere(gfn);
                if (mfn == NOT_HERE) { // swapped out since, or in the balloon: brought in outside the access
                    hostAccesses.exit(access); // (a swap-out waits for the host accesses to end)
                    ok = true;
                    bringIn(gfn);
                    continue;
                }
                FrameSharing sharing = backend.sharing();
                if (FrameDescriptor.type(host.allocator().descriptor(mfn)) != FrameDescriptor.TYPE_SHARED
                    && (sharing == null || sharing.beforeHostStore(gfn))) {
                    ok = true;
                    return (mfn << 4) | access;
                }
            } finally {
                if (!ok) {
                    hostAccesses.exit(access);
                }
            }
            backend.sharing().breakSharing(null, gfn); // a host store: logged in the bitmap, never a vCPU ring
        }
    }

    /** Ends the host-side store {@link #beginStore} started, logging the page after its bytes landed. */
    private void endStore(long store, long gfn) {
        try {
            dirty.markHost(gfn);
        } finally {
            hostAccesses.exit((int) (store & 0xF));
        }
    }

    private static long storeFrame(long store) {
        return store >>> 4;
    }

    /**
     * A whole-frame host store to guest frame {@code gfn}, when it was never populated, places the page with
     * its contents (what Linux's {@code UFFDIO_COPY} does for a post-copy destination): a frame taken without
     * its zero fill, filled by the caller, and only then installed, so that a migration's destination writes
     * each page once instead of zeroing it first. Inside the caller's host access: the frame, or -1 when the
     * entry is not empty any more (the caller stores the usual way).
     */
    private long freshFrame(long gfn) {
        checkAlive();
        if (p2m.entry(gfn) != P2mEntry.EMPTY) {
            return -1;
        }
        long frame = host.allocator().allocateForFill(id, FrameDescriptor.TYPE_DATA);
        if (frame < 0) {
            throw new HostOutOfMemoryException("host out of machine frames populating guest frame 0x"
                + Long.toHexString(gfn) + " of VM " + id);
        }
        return frame;
    }

    /**
     * The whole page at {@code buffer}'s position (advancing it) or at {@code array[offset]} into guest
     * frame {@code gfn} as {@link #freshFrame} places it; false, nothing read, when the frame was populated.
     */
    private boolean storeFresh(long gfn, java.nio.ByteBuffer buffer, byte[] array, int offset) {
        if (p2m.entry(gfn) != P2mEntry.EMPTY) {
            return false;
        }
        int access = hostAccesses.enter();
        try {
            long frame = freshFrame(gfn);
            if (frame < 0) {
                return false;
            }
            long pa = frame << MachineMemory.FRAME_SHIFT;
            int at = buffer == null ? 0 : buffer.position();
            try {
                if (buffer != null) {
                    host.memory().putBytes(pa, buffer, MachineMemory.FRAME_SIZE);
                } else {
                    host.memory().putBytes(pa, array, offset, MachineMemory.FRAME_SIZE);
                }
            } catch (RuntimeException e) {
                host.allocator().free(frame);
                throw e;
            }
            if (installFresh(gfn, frame)) {
                return true;
            }
            if (buffer != null) {
                buffer.position(at); // stored the usual way after all
            }
            return false;
        } finally {
            hostAccesses.exit(access);
        }
    }

    /**
     * Installs {@link #freshFrame}'s {@code frame}, now holding all 4096 bytes of the page, and logs the page;
     * false when the entry changed meanwhile: the frame, never reachable, goes back to the host.
     */
    private boolean installFresh(long gfn, long frame) {
        host.allocator().setGuestFrame(frame, gfn);
        if (!p2mWriter.install(gfn, frame)) {
            host.allocator().free(frame);
            return false;
        }
        populatedFrames.incrementAndGet();
        dirty.markHost(gfn);
        return true;
    }

    /**
     * Gives guest frame {@code gfn}'s machine frame back to the host (what a free-page report allows):
     * afterwards no vCPU can reach the old frame, and the guest reads zeros there. Returns false when the
     * frame was not populated, or the mode keeps it: under shadow paging a guest table the engine shadows;
     * under paravirtual paging a frame the guest's own tables still map or that is one of them (the host
     * cannot take a frame from a PV guest behind its back: the guest unmaps it first, and the discard is
     * then what Xen's {@code XENMEM_decrease_reservation} does).
     */
    public boolean discardFrame(long gfn) {
        checkFrame(gfn);
        return discard(gfn, P2mEntry.EMPTY);
    }

    /**
     * The one way a guest frame's machine frame leaves it for good (a discard, a balloon): the backend
     * unhooks it, leaving {@code replacement} in the p2m, every vCPU is flushed and the host accesses in
     * flight end before the frame goes back to the host. The guest reads zeros there now, so the page is
     * logged: a copy built from harvests must learn it, or a migration would bring the old contents back
     * (QEMU migrates a discarded page as a zero page). False when it was not populated or the mode keeps it.
     */
    private boolean discard(long gfn, long replacement) {
        long mfn = p2m.machineFrame(gfn);
        if (mfn < 0 || !backend.unmap(gfn, mfn, replacement)) {
            return false;
        }
        flushRemoteTlbs(); // no vCPU keeps a translation to the old frame...
        releaseFrame(mfn); // ...nor a host access, before it can be handed to anyone else
        dirty.markHost(gfn);
        return true;
    }

    /** What admission control promised this VM ({@link Host#admitVm}), or null when it was created without. */
    public io.vmpage.engine.policy.Allocation allocation() {
        return allocation;
    }

    void admitted(io.vmpage.engine.policy.Allocation a) {
        allocation = a;
    }

    /** The VM's virtio-balloon device (the host's side of the balloon). */
    public Balloon balloon() {
        return balloon;
    }

    /**
     * The balloon's inflate: guest frame {@code gfn} is the balloon's now; its frame (if any) goes back
     * to the host and its entry says BALLOONED, so a guest touch anyway is counted. Returns whether a
     * machine frame was freed. Under paravirtual paging this is Xen's {@code XENMEM_decrease_reservation}:
     * the guest must have removed every mapping of the frame from its own tables first.
     *
     * @throws IllegalStateException under paravirtual paging, when the guest's tables still map the
     *     frame or it is one of them (nothing changed)
     */
    boolean balloonFrame(long gfn) {
        checkFrame(gfn);
        long ballooned = P2mEntry.notPresent(P2mEntry.BALLOONED, 0);
        while (true) {
            long e = p2m.entry(gfn);
            if (e == P2mEntry.EMPTY) {
                if (p2mWriter.compareAndSet(gfn, e, ballooned)) {
                    return false; // never populated: nothing to free, but a touch is counted all the same
                }
            } else if (!P2mEntry.isPresent(e) && P2mEntry.kind(e) == P2mEntry.SWAPPED) {
                if (p2mWriter.compareAndSet(gfn, e, ballooned)) { // the guest gave up its contents: the slot goes too
                    host.swap().free(P2mEntry.payloadOf(e));
                    swappedFrames.decrementAndGet();
                    return false;
                }
            } else if (!P2mEntry.isPresent(e)) {
                return false; // ballooned already, or on its way in: left as it is
            } else if (discard(gfn, ballooned)) {
                return true;
            } else if (p2m.entry(gfn) == e) {
                if (config.paging() == PagingMode.PARAVIRTUAL) {
                    throw new IllegalStateException("decrease_reservation refused for guest frame 0x" + Long.toHexString(gfn) + " of VM "
                        + id + ": its machine frame " + P2mEntry.frame(e) + " is still mapped by the guest's page tables or is one of"
                        + " them (a PV balloon unmaps a page from its own tables before it gives the page back)");
                }
                return false; // the mode keeps it (a shadowed guest table)
            }
        }
    }

    /** The balloon's deflate: guest frame {@code gfn} is the guest's again (populated afresh on its next touch, not counted). */
    void unballoonFrame(long gfn) {
        checkFrame(gfn);
        long e = p2m.entry(gfn);
        if (P2mEntry.kind(e) == P2mEntry.BALLOONED && !P2mEntry.isPresent(e)) {
            p2mWriter.compareAndSet(gfn, e, P2mEntry.EMPTY);
        }
    }

    /**
     * Swaps guest frame {@code gfn} out to the host's swap device (ESX's and KVM's host swapping), as
     * Linux unmaps a page before it writes it back: the frame is unhooked first (its p2m entry says "being
     * swapped out, slot N", so a vCPU or host access touching it now waits), every vCPU is flushed and the
     * host accesses in flight end (every store made before has landed in the frame), then its contents go
     * to the slot, the entry says "on swap, slot N" and the frame goes back to the host. The next touch
     * swaps it back in through the engine's fetch-on-fault path. A page the guest writes all the time is
     * swapped out all the same (and comes straight back), as ESX's random replacement does. Shared frames,
     * frames holding guest tables the engine shadows, and frames that are not here are not swapped. Safe
     * while the vCPUs run. Returns whether it was swapped.
     *
     * @throws IllegalStateException when the host has no swap device, or the VM runs paravirtual paging
     * @throws io.vmpage.engine.swap.SwapException when the device is full or the write failed: the page
     *     stays in memory, unchanged and mapped again on its next touch
     */
    public boolean swapOut(long gfn) {
        checkFrame(gfn);
        io.vmpage.engine.swap.SwapDevice swap = host.swap();
        if (swap == null) {
            throw new IllegalStateException("host has no swap device to swap VM " + id + "'s frames out to (Host.attachSwap)");
        }
        if (config.paging() == PagingMode.PARAVIRTUAL) {
            throw new IllegalStateException("VM " + id + " runs paravirtual paging: its page tables hold machine frames, so"
                + " the host cannot take a frame away behind its back (Xen does not swap PV guests' memory)");
        }
        checkAlive();
        long e = p2m.entry(gfn);
        long mfn = P2mEntry.frame(e);
        if (!P2mEntry.isPresent(e) || P2mEntry.kind(e) != P2mEntry.PRIVATE
            || FrameDescriptor.type(host.allocator().descriptor(mfn)) != FrameDescriptor.TYPE_DATA) {
            return false;
        }
        long slot = swap.allocate();
        if (slot < 0) {
            throw new io.vmpage.engine.swap.SwapException("swap device " + swap.path() + " is full (" + swap.slots() + " slots)");
        }
        long outgoing = P2mEntry.notPresent(P2mEntry.FETCHING, slot); // touches wait until it is on swap
        if (!backend.unmap(gfn, mfn, outgoing)) {
            swap.free(slot);
            return false; // it changed meanwhile, or the mode keeps it
        }
        flushRemoteTlbs(); // no vCPU reaches the frame through a cached translation any more...
        awaitHostAccesses(); // ...and the host stores that looked it up before have landed in it
        int access = hostAccesses.enter(); // a destroy waits for the rest
        try {
            if (destroyed) { // the destroy found the entry in flight and left the frame to this thread
                p2mWriter.compareAndSet(gfn, outgoing, P2mEntry.EMPTY);
                swap.free(slot);
                freeUnmappedFrame(mfn);
                checkAlive();
            }
            try {
                swap.write(slot, host.memory(), mfn << MachineMemory.FRAME_SHIFT);
            } catch (RuntimeException failure) { // the page stays: its frame is mapped again on the next touch
                p2mWriter.compareAndSet(gfn, outgoing, P2mEntry.privateFrame(mfn));
                swap.free(slot);
                throw failure;
            }
            swappedFrames.incrementAndGet(); // before the entry says so: a swap-in decrements it
            if (!p2mWriter.compareAndSet(gfn, outgoing, P2mEntry.notPresent(P2mEntry.SWAPPED, slot))) {
                throw new IllegalStateException("guest frame 0x" + Long.toHexString(gfn) + " of VM " + id
                    + " changed while it was swapped out");
            }
        } finally {
            hostAccesses.exit(access);
        }
        freeUnmappedFrame(mfn); // unreachable since the flush and the host-access drain above
        return true;
    }

    /**
     * ESX's victim choice: swaps out up to {@code pages} frames chosen at random among this VM's guest
     * frames (skipping those {@link #swapOut} leaves alone), trying at most 16 random frames per page.
     * Returns how many it swapped out.
     */
    public long swapOutRandom(long pages, java.util.random.RandomGenerator random) {
        long done = 0;
        long frames = p2m.frames();
        for (long tries = 0; done < pages && tries < pages * 16; tries++) {
            if (swapOut(random.nextLong(frames))) {
                done++;
            }
        }
        return done;
    }

    /**
     * Working-set sampling (ESX's statistical sampling): unmaps guest frame {@code gfn} for the guest
     * (the frame stays) and flushes every vCPU, so its next access exits and maps it again, which
     * {@link #mappedForGuest} then shows. False when it was not mapped (never touched since populated, or
     * a shadowed guest table, which the engine keeps mapped).
     *
     * @throws IllegalStateException under paravirtual paging (the guest maps machine frames itself)
     */
    public boolean unmapForSampling(long gfn) {
        checkFrame(gfn);
        checkAlive();
        long e = p2m.entry(gfn);
        if (!P2mEntry.isPresent(e) || P2mEntry.kind(e) != P2mEntry.PRIVATE) {
            return false;
        }
        if (!backend.unmapForSampling(gfn)) {
            return false;
        }
        flushRemoteTlbs();
        return true;
    }

    /** Whether guest frame {@code gfn} is mapped for the guest now (it was touched since {@link #unmapForSampling}). */
    public boolean mappedForGuest(long gfn) {
        checkFrame(gfn);
        return backend.mapped(gfn);
    }

    /**
     * Guest frames mapped to a frame shared copy-on-write now (the zero frame included): a scan of the
     * guest-physical map, O(guest frames), for statistics.
     */
    public long sharedFrames() {
        long shared = 0;
        for (long gfn = 0, frames = p2m.frames(); gfn < frames; gfn++) {
            long e = p2m.entry(gfn);
            if (P2mEntry.isPresent(e) && P2mEntry.kind(e) == P2mEntry.SHARED) {
                shared++;
            }
        }
        return shared;
    }

    /** Guest frames whose contents are on the host's swap device now. */
    public long swappedFrames() {
        return swappedFrames.get();
    }

    /** Guest touches of ballooned frames (a guest bug: each got a fresh zero frame). */
    long balloonTouches() {
        return balloonTouches.get();
    }

    private static long hostAddress(long mfn, long gpa) {
        return (mfn << MachineMemory.FRAME_SHIFT) | (gpa & MachineMemory.FRAME_OFFSET_MASK);
    }

    /**
     * The 64-bit hash of guest frame {@code gfn}'s contents as they are now ({@link MachineMemory#frameHash}),
     * read as a host access, as a page-sharing scanner reads a candidate: a frame that is not populated, or
     * not here (post-copy, on swap), is not brought in and hashes as zeros, which is what the guest would
     * read there now. A hint only: a merge compares the frames after write-protecting them.
     */
    public long frameContentHash(long gfn) {
        checkFrame(gfn);
        int access = hostAccesses.enter();
        try {
            checkAlive();
            long mfn = p2m.machineFrame(gfn);
            return mfn < 0 ? MachineMemory.zeroFrameHash() : host.memory().frameHash(mfn);
        } finally {
            hostAccesses.exit(access);
        }
    }

    /**
     * Puts this VM in page-sharing domain {@code domain}: a sharing scanner merges its pages only with
     * pages of VMs in the same domain (null: this VM alone, the default). This is ESX's share salting
     * ({@code sched.mem.pshare.salt}, and {@code Mem.ShareForceSalting} making every VM its own domain by
     * default since 2014): deduplication across tenants is a timing side channel, so VMs that do not trust
     * each other never share. The all-zero page is shared across domains (it holds nothing to learn).
     */
    public void setSharingDomain(String domain) {
        if (domain != null && domain.isBlank()) {
            throw new IllegalArgumentException("a sharing domain needs a name (null puts the VM in a domain of its own)");
        }
        sharingDomain = domain;
    }

    /** This VM's page-sharing domain; null when it is a domain of its own. */
    public String sharingDomain() {
        return sharingDomain;
    }

    /**
     * For a host-side read: the host-physical address of {@code gpa}, or -1 when its frame was never
     * populated (or was discarded), which reads as zeros without allocating a frame, as QEMU reads such
     * RAM through the zero page: a migration's bulk copy of a sparse guest must not populate it.
     */
    private long readAddress(long gpa, int width) {
        checkPhysical(gpa, width);
        checkAlive();
        long e = p2m.entry(gpa >>> MachineMemory.FRAME_SHIFT);
        if (P2mEntry.isPresent(e)) {
            return hostAddress(P2mEntry.frame(e), gpa);
        }
        return e == P2mEntry.EMPTY || P2mEntry.kind(e) == P2mEntry.BALLOONED ? -1 : NOT_HERE;
    }

    /**
     * {@link #readAddress}: the frame's contents are elsewhere right now (being swapped out, on swap, not
     * here yet, on their way in). The reader ends its host access, brings the frame in and looks again: a
     * host read racing a swap-out must read the page, never the zeros of a frame that is only away.
     */
    private static final long NOT_HERE = -2;

    private void checkPhysical(long gpa, int width) {
        if (gpa < 0 || gpa > config.memoryBytes() - width || (gpa & (width - 1)) != 0) {
            throw new IllegalArgumentException("guest-physical address 0x" + Long.toHexString(gpa) + " (" + width
                + "-byte access) is outside or misaligned in VM " + id + "'s " + config.memoryBytes() + " bytes");
        }
    }

    /**
     * Starts a host-side read of {@code width} bytes at {@code gpa}: brings its frame in if it is elsewhere,
     * enters a host access and looks the frame up, again if it went away meanwhile (a swap-out), and returns
     * the access with the host-physical address, packed as {@code (hpa + 1) << 4 | slot} (hpa -1: the frame
     * reads as zeros). Read it with {@link #readHpa}, end it with {@link #endRead}.
     */
    private long beginRead(long gpa, int width) {
        while (true) {
            bringInIfAbsent(gpa >>> MachineMemory.FRAME_SHIFT);
            int access = hostAccesses.enter();
            boolean ok = false;
            try {
                long hpa = readAddress(gpa, width);
                if (hpa != NOT_HERE) {
                    ok = true;
                    return ((hpa + 1) << 4) | access;
                }
            } finally {
                if (!ok) {
                    hostAccesses.exit(access);
                }
            }
        }
    }

    private static long readHpa(long read) {
        return (read >>> 4) - 1;
    }

    private void endRead(long read) {
        hostAccesses.exit((int) (read & 0xF));
    }

    /** Reads guest-physical {@code gpa} (a volatile load: an entry a vCPU or the engine changes by CAS reads whole). */
    public long readPhysicalLong(long gpa) {
        checkPhysical(gpa, 8);
        long read = beginRead(gpa, 8);
        try {
            long hpa = readHpa(read);
            return hpa < 0 ? 0 : host.memory().getLongVolatile(hpa);
        } finally {
            endRead(read);
        }
    }

    /**
     * Stores to guest-physical {@code gpa} (a release store, so a vCPU walking a table entry written here
     * sees what was written before it), then logs the page (marked after the store: see {@link DirtyLog}).
     */
    public void writePhysicalLong(long gpa, long value) {
        checkPhysical(gpa, 8);
        long gfn = gpa >>> MachineMemory.FRAME_SHIFT;
        long store = beginStore(gfn);
        try {
            host.memory().putLongRelease(hostAddress(storeFrame(store), gpa), value);
        } finally {
            endStore(store, gfn);
        }
    }

    /** Copies {@code length} bytes from guest-physical {@code gpa} (may cross frames). */
    public void readPhysical(long gpa, byte[] dst, int offset, int length) {
        java.util.Objects.checkFromIndexSize(offset, length, dst.length);
        while (length > 0) {
            int chunk = (int) Math.min(length, MachineMemory.FRAME_SIZE - (gpa & MachineMemory.FRAME_OFFSET_MASK));
            checkPhysical(gpa, 1);
            long read = beginRead(gpa, 1);
            try {
                long hpa = readHpa(read);
                if (hpa < 0) {
                    java.util.Arrays.fill(dst, offset, offset + chunk, (byte) 0);
                } else {
                    host.memory().getBytes(hpa, dst, offset, chunk);
                }
            } finally {
                endRead(read);
            }
            gpa += chunk;
            offset += chunk;
            length -= chunk;
        }
    }

    /**
     * As {@link #readPhysical(long, byte[], int, int)}, into {@code dst} at its position, advancing it:
     * a migration copies guest pages straight into its transport's (direct) buffers.
     */
    public void readPhysical(long gpa, java.nio.ByteBuffer dst, int length) {
        if (length < 0 || length > dst.remaining()) {
            throw new java.nio.BufferOverflowException();
        }
        while (length > 0) {
            int chunk = (int) Math.min(length, MachineMemory.FRAME_SIZE - (gpa & MachineMemory.FRAME_OFFSET_MASK));
            checkPhysical(gpa, 1);
            long read = beginRead(gpa, 1);
            try {
                long hpa = readHpa(read);
                if (hpa < 0) {
                    for (int i = 0; i < chunk; i++) {
                        dst.put((byte) 0);
                    }
                } else {
                    host.memory().getBytes(hpa, dst, chunk);
                }
            } finally {
                endRead(read);
            }
            gpa += chunk;
            length -= chunk;
        }
    }

    /**
     * Whether guest frame {@code gfn} reads as all zeros now (a host read: a frame not here is brought in
     * first; one never populated, discarded or in the balloon reads as zeros), as a migration tells a zero
     * page before it sends it as a flag.
     */
    public boolean isZeroFrame(long gfn) {
        checkFrame(gfn);
        long read = beginRead(gfn << MachineMemory.FRAME_SHIFT, 1);
        try {
            long hpa = readHpa(read);
            return hpa < 0 || host.memory().isFrameZero(hpa >>> MachineMemory.FRAME_SHIFT);
        } finally {
            endRead(read);
        }
    }

    /**
     * {@link #isZeroFrame} for up to 64 guest frames {@code gfns[from..from+n)} at once: bit {@code i} of the
     * result is set when {@code gfns[from + i]} reads as zeros. The frames here are scanned under one host
     * access, so that their reads overlap (an access per page is a pair of atomics, and each waits for the
     * page's read, a miss to memory, before the next page starts: the scan ran at one miss per page); a frame
     * away (on swap, on its way) is brought in and scanned on its own, as {@link #isZeroFrame} does.
     *
     * @throws IllegalArgumentException when {@code n} is not 1 to 64 or a frame is outside this VM
     * @throws IllegalStateException when the VM is destroyed
     */
    public long zeroFrames(long[] gfns, int from, int n) {
        if (n < 1 || n > 64) {
            throw new IllegalArgumentException("a zero scan takes 1 to 64 frames, not " + n);
        }
        java.util.Objects.checkFromIndexSize(from, n, gfns.length);
        for (int i = 0; i < n; i++) {
            checkFrame(gfns[from + i]);
        }
        MachineMemory memory = host.memory();
        long zero = 0;
        long away = 0;
        int access = hostAccesses.enter();
        try {
            checkAlive();
            for (int i = 0; i < n; i++) {
                long e = p2m.entry(gfns[from + i]);
                if (P2mEntry.isPresent(e)) {
                    if (memory.isFrameZero(P2mEntry.frame(e))) {
                        zero |= 1L << i;
                    }
                } else if (e == P2mEntry.EMPTY || P2mEntry.kind(e) == P2mEntry.BALLOONED) {
                    zero |= 1L << i;
                } else {
                    away |= 1L << i;
                }
            }
        } finally {
            hostAccesses.exit(access);
        }
        for (long w = away; w != 0; w &= w - 1) {
            int i = Long.numberOfTrailingZeros(w);
            if (isZeroFrame(gfns[from + i])) {
                zero |= 1L << i;
            }
        }
        return zero;
    }

    /**
     * Copies guest frame {@code gfn} of {@code source}, a VM of another host in this process, into guest
     * frame {@code gfn} of this VM: one copy from the source host's memory into this host's, which is how an
     * in-process migration moves a page (QEMU's RDMA migration places pages in the destination's registered
     * RAM the same way, with no copy through a stream buffer). The source frame is read as a host access of
     * the source: a frame it gives back meanwhile is never read once the host may have handed it to anyone
     * else, and a destroyed source fails the copy. A source frame not here is brought in first; one that
     * reads as zeros copies as zeros. This VM's frame is placed filled when it was never populated, stored
     * over otherwise, and logged like any host store.
     *
     * @throws IllegalArgumentException when {@code source} is this VM or {@code gfn} is outside either VM
     * @throws IllegalStateException when either VM is destroyed
     */
    public void copyFrameFrom(Vm source, long gfn) {
        if (source == this) {
            throw new IllegalArgumentException("VM " + id + " cannot copy a frame from itself");
        }
        checkFrame(gfn);
        source.checkFrame(gfn);
        MachineMemory memory = host.memory();
        while (true) {
            source.bringInIfAbsent(gfn);
            if (p2m.entry(gfn) == P2mEntry.EMPTY) {
                int access = hostAccesses.enter();
                try {
                    long frame = freshFrame(gfn);
                    if (frame >= 0) {
                        boolean read;
                        try {
                            read = source.readFrameInto(gfn, memory, frame);
                        } catch (RuntimeException e) {
                            host.allocator().free(frame);
                            throw e;
                        }
                        if (!read) {
                            host.allocator().free(frame);
                            continue; // it went to swap meanwhile: brought in again
                        }
                        if (installFresh(gfn, frame)) {
                            return;
                        }
                    }
                } finally {
                    hostAccesses.exit(access);
                }
            }
            long store = beginStore(gfn);
            try {
                if (source.readFrameInto(gfn, memory, storeFrame(store))) {
                    return;
                }
            } finally {
                endStore(store, gfn);
            }
        }
    }

    /** Pages a {@link #copyFramesFrom} batch places under one pair of host accesses (a bit each in a long). */
    private static final int COPY_BATCH = 64;
    /** Each copying thread's machine frames for one batch. */
    private static final ThreadLocal<long[]> BATCH_FRAMES = ThreadLocal.withInitial(() -> new long[COPY_BATCH]);

    /**
     * {@link #copyFrameFrom} for {@code count} guest frames {@code gfns[0..count)} at once: the pages never
     * populated here take their frames in one step and are copied and placed under one host access of each
     * VM per 64, with one fence for their dirty marks (what made a page cost several atomics before its copy);
     * the rest go one by one. The same guarantees as {@link #copyFrameFrom}; a failure leaves every page
     * copied before it in place and no frame taken.
     */
    public void copyFramesFrom(Vm source, long[] gfns, int count) {
        copyFramesFrom(source, gfns, 0, count);
    }

    /** {@link #copyFramesFrom(Vm, long[], int)} for {@code gfns[offset..offset+count)}. */
    public void copyFramesFrom(Vm source, long[] gfns, int offset, int count) {
        if (source == this) {
            throw new IllegalArgumentException("VM " + id + " cannot copy frames from itself");
        }
        java.util.Objects.checkFromIndexSize(offset, count, gfns.length);
        long[] frames = BATCH_FRAMES.get();
        for (int from = offset; from < offset + count; from += COPY_BATCH) {
            int n = Math.min(COPY_BATCH, offset + count - from);
            long slow = copyBatch(source, gfns, from, n, frames);
            for (long w = slow; w != 0; w &= w - 1) {
                copyFrameFrom(source, gfns[from + Long.numberOfTrailingZeros(w)]);
            }
        }
    }

    /**
     * One batch of {@link #copyFramesFrom}: places the pages of {@code gfns[from..from+n)} that are never
     * populated here and here at the source; returns the bits (relative to {@code from}) of those left to
     * the one-by-one path (populated here, away from the source, or a frame short).
     */
    private long copyBatch(Vm source, long[] gfns, int from, int n, long[] frames) {
        long empty = 0;
        for (int i = 0; i < n; i++) {
            long gfn = gfns[from + i];
            checkFrame(gfn);
            source.checkFrame(gfn);
            source.bringInIfAbsent(gfn);
            if (p2m.entry(gfn) == P2mEntry.EMPTY) {
                empty |= 1L << i;
            }
        }
        long all = n == 64 ? -1L : (1L << n) - 1;
        if (empty == 0) {
            return all;
        }
        MachineMemory memory = host.memory();
        MachineMemory sourceMemory = source.host.memory();
        long placed = 0;
        int access = hostAccesses.enter();
        try {
            checkAlive();
            int got = host.allocator().allocateForFill(id, FrameDescriptor.TYPE_DATA, frames, Long.bitCount(empty));
            // The free list hands frames out in the reverse of the order they came back in (a destroyed VM's
            // ascending frames come out descending): ascending pages go to ascending frames, which copies at
            // memory speed, where writing pages in descending address order took 40% longer here.
            ascending(frames, got);
            long copied = 0; // pages whose bytes are in frames[0..used), in bit order
            int used = 0;
            int sourceAccess = source.hostAccesses.enter();
            try {
                source.checkAlive();
                for (long w = empty; w != 0 && used < got; w &= w - 1) {
                    int i = Long.numberOfTrailingZeros(w);
                    long e = source.p2m.entry(gfns[from + i]);
                    if (!P2mEntry.isPresent(e) && e != P2mEntry.EMPTY && P2mEntry.kind(e) != P2mEntry.BALLOONED) {
                        continue; // away again (a swap-out): one by one
                    }
                    if (P2mEntry.isPresent(e)) {
                        sourceMemory.copyFrameTo(P2mEntry.frame(e), memory, frames[used]);
                    } else {
                        memory.zeroFrame(frames[used]);
                    }
                    copied |= 1L << i;
                    used++;
                }
            } catch (RuntimeException failure) {
                freeFrames(frames, 0, got); // none installed yet
                throw failure;
            } finally {
                source.hostAccesses.exit(sourceAccess);
            }
            // Installs after all the copies: an install is a CAS, which waits for every store before it to
            // land, so one per copied page would wait out each page's copy in turn.
            int f = 0;
            for (long w = copied; w != 0; w &= w - 1, f++) {
                int i = Long.numberOfTrailingZeros(w);
                long gfn = gfns[from + i];
                host.allocator().setGuestFrame(frames[f], gfn);
                if (p2mWriter.install(gfn, frames[f])) { // the page, whole, is what becomes reachable
                    placed |= 1L << i;
                } else {
                    host.allocator().free(frames[f]); // populated meanwhile: one by one; never reachable
                }
            }
            freeFrames(frames, used, got);
            if (placed != 0) {
                populatedFrames.addAndGet(Long.bitCount(placed));
                dirty.markHost(gfns, from, placed);
            }
        } finally {
            hostAccesses.exit(access);
        }
        return all & ~placed;
    }

    /**
     * Sorts {@code frames[0..n)} ascending: reversed when they come descending (as the free list mostly
     * hands them out: in a JFR profile of a migration, 6% of the destination thread's samples were in the sort), sorted otherwise.
     */
    private static void ascending(long[] frames, int n) {
        boolean descending = true;
        boolean ascending = true;
        for (int i = 1; i < n && (descending || ascending); i++) {
            descending &= frames[i - 1] > frames[i];
            ascending &= frames[i - 1] < frames[i];
        }
        if (ascending) {
            return;
        }
        if (descending) {
            for (int i = 0, j = n - 1; i < j; i++, j--) {
                long f = frames[i];
                frames[i] = frames[j];
                frames[j] = f;
            }
            return;
        }
        java.util.Arrays.sort(frames, 0, n);
    }

    /** Gives {@code frames[from..to)}, taken and never installed, back to the host. */
    private void freeFrames(long[] frames, int from, int to) {
        for (int f = from; f < to; f++) {
            host.allocator().free(frames[f]);
        }
    }

    /**
     * This VM's guest frame {@code gfn} into frame {@code frame} of {@code dst} (another host's memory), as a
     * host access of this VM; false, nothing copied, when its contents are elsewhere right now (the caller
     * brings it in and tries again).
     */
    private boolean readFrameInto(long gfn, MachineMemory dst, long frame) {
        int access = hostAccesses.enter();
        try {
            long hpa = readAddress(gfn << MachineMemory.FRAME_SHIFT, 1);
            if (hpa == NOT_HERE) {
                return false;
            }
            if (hpa == -1) {
                dst.zeroFrame(frame);
            } else {
                host.memory().copyFrameTo(hpa >>> MachineMemory.FRAME_SHIFT, dst, frame);
            }
            return true;
        } finally {
            hostAccesses.exit(access);
        }
    }

    /** As {@link #writePhysical(long, byte[], int, int)}, from {@code src} at its position, advancing it. */
    public void writePhysical(long gpa, java.nio.ByteBuffer src, int length) {
        if (length < 0 || length > src.remaining()) {
            throw new java.nio.BufferUnderflowException();
        }
        while (length > 0) {
            int chunk = (int) Math.min(length, MachineMemory.FRAME_SIZE - (gpa & MachineMemory.FRAME_OFFSET_MASK));
            checkPhysical(gpa, 1);
            long gfn = gpa >>> MachineMemory.FRAME_SHIFT;
            if (chunk != MachineMemory.FRAME_SIZE || !storeFresh(gfn, src, null, 0)) {
                long store = beginStore(gfn);
                try {
                    host.memory().putBytes(hostAddress(storeFrame(store), gpa), src, chunk);
                } finally {
                    endStore(store, gfn);
                }
            }
            gpa += chunk;
            length -= chunk;
        }
    }

    /** Copies {@code length} bytes to guest-physical {@code gpa} (may cross frames), logging each page after its bytes. */
    public void writePhysical(long gpa, byte[] src, int offset, int length) {
        java.util.Objects.checkFromIndexSize(offset, length, src.length);
        while (length > 0) {
            int chunk = (int) Math.min(length, MachineMemory.FRAME_SIZE - (gpa & MachineMemory.FRAME_OFFSET_MASK));
            checkPhysical(gpa, 1);
            long gfn = gpa >>> MachineMemory.FRAME_SHIFT;
            if (chunk != MachineMemory.FRAME_SIZE || !storeFresh(gfn, null, src, offset)) {
                long store = beginStore(gfn);
                try {
                    host.memory().putBytes(hostAddress(storeFrame(store), gpa), src, offset, chunk);
                } finally {
                    endStore(store, gfn);
                }
            }
            gpa += chunk;
            offset += chunk;
            length -= chunk;
        }
    }

    /**
     * x86-64 page tables in this VM's guest-physical memory, as a bootloader or a guest kernel builds
     * them: tables come from the guest-physical range [{@code tableAreaStart}, {@code tableAreaEnd}),
     * entries hold guest-physical addresses, stores go to the frames backing them (populated on demand).
     * Writes through this object are plain memory stores: no exit, no TLB invalidation. While the dirty
     * log is on, each store (and each new table's zero fill) is logged after it lands, as a host store.
     */
    public io.vmpage.mmu.PageTables guestPageTables(long tableAreaStart, long tableAreaEnd) {
        if (tableAreaStart < 0 || tableAreaEnd > config.memoryBytes() || tableAreaStart >= tableAreaEnd
            || ((tableAreaStart | tableAreaEnd) & MachineMemory.FRAME_OFFSET_MASK) != 0) {
            throw new IllegalArgumentException("page-table area [0x" + Long.toHexString(tableAreaStart) + ", 0x"
                + Long.toHexString(tableAreaEnd) + ") must be frame-aligned and inside VM " + id + "'s memory");
        }
        long[] next = {tableAreaStart};
        return new io.vmpage.mmu.PageTables(io.vmpage.mmu.PageTables.Format.X86, config.levels(), () -> {
            if (next[0] >= tableAreaEnd) {
                throw new IllegalStateException("guest page-table area exhausted at 0x" + Long.toHexString(tableAreaEnd));
            }
            long gpa = next[0];
            next[0] += MachineMemory.FRAME_SIZE;
            long gfn = gpa >>> MachineMemory.FRAME_SHIFT;
            long store = beginStore(gfn);
            try {
                host.memory().zeroFrame(storeFrame(store));
            } finally {
                endStore(store, gfn);
            }
            return gpa;
        }, guestTableMemory);
    }

    /** Guest page-table entries by guest-physical address: host accesses, stores logged after they land. */
    private final io.vmpage.mmu.TableMemory guestTableMemory = new io.vmpage.mmu.TableMemory() {
        @Override
        public long load(long gpa) {
            return readPhysicalLong(gpa);
        }

        @Override
        public void store(long gpa, long entry) {
            writePhysicalLong(gpa, entry);
        }
    };

    // ------------------------------------------------------------------ remote TLB flush

    /**
     * Flushes every vCPU's TLB and paging caches and waits until each running vCPU has done so (KVM's
     * {@code kvm_flush_remote_tlbs}): after this returns, no vCPU can reach a machine frame through a
     * translation cached before the call. A vCPU calling this flushes its own hardware directly.
     */
    public void flushRemoteTlbs() {
        Vcpu self = Vcpu.current();
        int n = vcpus.size();
        for (int i = 0; i < n; i++) {
            vcpus.get(i).requestFlush();
        }
        for (int i = 0; i < n; i++) {
            Vcpu v = vcpus.get(i);
            if (v == self) {
                v.serviceRequestsWhileWaiting(); // the caller may hold engine locks: a pause holds it later
            } else {
                // Waits for the vCPU's latest kick, at least the one posted above: a later one (another
                // requester's) is served with it, and no array of targets is needed (no allocation per flush,
                // which a copy-on-write break or a swap-out makes per page).
                v.awaitFlush(v.latestKick(), self);
            }
        }
    }

    // ------------------------------------------------------------------ pause, resume, throttle, state

    /**
     * Pauses the VM (QEMU's {@code stop}, KVM vCPUs kicked out to user space): returns once every vCPU
     * is outside guest mode and outside any exit, and none can re-enter until {@link #resume}; a thread
     * running a vCPU waits inside its current access (which restarts from its translation when the VM
     * resumes, as an interrupted instruction does). Host-side accesses stay allowed: a migration reads
     * the paused memory, a destination writes it. Like a remote flush, this relies on running vCPUs
     * making accesses.
     *
     * @throws IllegalStateException when the VM is paused already, is destroyed, or the caller runs one
     *     of its vCPUs (which would wait for itself)
     */
    public void pause() {
        synchronized (pauseControl) {
            checkAlive();
            Vcpu self = Vcpu.current();
            if (self != null && self.vm() == this) {
                throw new IllegalStateException(self + " cannot pause its own VM (it would wait for itself)");
            }
            if (paused) {
                throw new IllegalStateException("VM " + id + " is already paused");
            }
            paused = true;
            for (Vcpu v : vcpus) {
                v.requestPause();
            }
            for (Vcpu v : vcpus) {
                v.awaitOutside();
            }
        }
    }

    /**
     * Lets a paused VM's vCPUs run again (QEMU's {@code cont}).
     *
     * @throws IllegalStateException when the VM is not paused
     */
    public void resume() {
        synchronized (pauseControl) {
            if (!paused) {
                throw new IllegalStateException("VM " + id + " is not paused");
            }
            paused = false;
        }
    }

    /** Whether the VM is paused. */
    public boolean paused() {
        return paused;
    }

    /** Read by the vCPUs at each request they serve. */
    boolean pauseRequested() {
        return paused;
    }

    /**
     * Retires every vCPU of this paused VM for good, keeping its memory: what a migration source does at
     * the switch-over, when its guest runs on the destination while the source still serves pages (post-copy)
     * or is about to be destroyed. Threads waiting in the vCPUs' accesses, and every later use of them, get
     * the stale-handle {@link IllegalStateException} (and can carry on on the destination); host-side
     * accesses to the memory still work until {@link Host#destroyVm}.
     *
     * @throws IllegalStateException when the VM is not paused
     */
    public void retireVcpus() {
        synchronized (pauseControl) {
            if (!paused) {
                throw new IllegalStateException("VM " + id + " must be paused to retire its vCPUs");
            }
            long[] kicks = new long[vcpus.size()];
            for (int i = 0; i < kicks.length; i++) {
                kicks[i] = vcpus.get(i).retire();
            }
            for (int i = 0; i < kicks.length; i++) {
                vcpus.get(i).awaitRetired(kicks[i]);
            }
        }
    }

    /**
     * Throttles the vCPUs (QEMU's {@code cpu_throttle_set}, which auto-converge uses): each vCPU is kept
     * out of guest mode for {@code percent} of the time. As QEMU does it, a timer fires every
     * 10 ms / (1 - percent/100) and each vCPU then sleeps percent / (100 - percent) x 10 ms outside guest
     * mode at its next access, so it runs 10 ms per period. 0 stops throttling.
     *
     * @throws IllegalArgumentException when {@code percent} is outside 0..99
     */
    public void setThrottle(int percent) {
        if (percent < 0 || percent > 99) {
            throw new IllegalArgumentException("throttle " + percent + "% must be between 0 and 99");
        }
        synchronized (pauseControl) {
            checkAlive();
            throttlePercent = percent;
            if (percent > 0 && throttler == null) {
                throttler = new Thread(this::throttleLoop, "vm-" + id + "-throttle");
                throttler.setDaemon(true);
                throttler.start();
            }
            if (throttler != null) {
                java.util.concurrent.locks.LockSupport.unpark(throttler);
            }
        }
    }

    /** The throttle in percent (0: none). */
    public int throttlePercent() {
        return throttlePercent;
    }

    /** QEMU's throttle timeslice: each vCPU runs this long per throttle period. */
    private static final long THROTTLE_TIMESLICE_NANOS = 10_000_000;

    private void throttleLoop() {
        while (true) {
            int percent = throttlePercent;
            if (percent == 0 || destroyed) {
                synchronized (pauseControl) {
                    if (throttlePercent == 0 || destroyed) {
                        throttler = null;
                        return;
                    }
                }
                continue;
            }
            long sleep = THROTTLE_TIMESLICE_NANOS * percent / (100 - percent);
            for (Vcpu v : vcpus) {
                v.requestThrottle(sleep);
            }
            java.util.concurrent.locks.LockSupport.parkNanos(THROTTLE_TIMESLICE_NANOS * 100 / (100 - percent));
        }
    }

    /**
     * The state this VM carries besides its memory ({@link VmState}), for a migration's switch-over; a
     * paravirtual VM's page tables come canonicalized to guest frame numbers ({@link PvTable}), and its
     * vCPUs' CR3s name guest frames.
     *
     * @throws IllegalStateException when the VM is not paused
     */
    public VmState exportState() {
        synchronized (pauseControl) {
            checkAlive();
            checkStateTransfer("export");
            List<VcpuState> states = new ArrayList<>();
            for (Vcpu v : vcpus) {
                io.vmpage.mmu.ControlRegisters r = v.mmu().registers();
                long cr3 = backend.guestCr3(v.context());
                states.add(new VcpuState(r.cr0(), cr3 >= 0 ? backend.canonicalCr3(cr3) : 0, cr3 >= 0, r.cr4(), r.efer(),
                    v.userMode()));
            }
            return new VmState(config, states, backend.exportTables());
        }
    }

    /**
     * Loads {@code state} into this VM's vCPUs, as a migration destination does before it resumes: the
     * registers go through the paging mode as the guest's own writes would (shadow paging builds the
     * root for the guest's CR3). The VM must be paused (so no thread runs its vCPUs) and have the
     * state's configuration.
     *
     * @throws IllegalStateException when the VM is not paused or its paging mode cannot take state over
     * @throws IllegalArgumentException when the state is another configuration's
     */
    public void importState(VmState state) {
        synchronized (pauseControl) {
            checkAlive();
            checkStateTransfer("import");
            if (!state.config().equals(config)) {
                throw new IllegalArgumentException("state of a VM configured " + state.config() + " cannot go into VM " + id
                    + " configured " + config);
            }
            backend.importTables(state.pvTables());
            for (Vcpu v : vcpus) {
                VcpuState s = state.vcpus().get(v.index());
                v.importState(s);
            }
            backend.importDone();
        }
    }

    private void checkStateTransfer(String what) {
        if (!paused) {
            throw new IllegalStateException("VM " + id + " must be paused to " + what + " its state");
        }
        if (!backend.transfersState()) {
            throw new IllegalStateException("cannot " + what + " the state of VM " + id + ": paging mode " + config.paging()
                + " keeps machine frame numbers in guest page tables, which must be translated as Xen's save/restore"
                + " does; not supported yet");
        }
    }

    /** Whether this VM's destruction has begun ({@link Host#destroyVm}): a fetcher waiting for one of its frames gives up. */
    public boolean destroyed() {
        return destroyed;
    }

    private void checkAlive() {
        if (destroyed) {
            throw new IllegalStateException("VM " + id + " is destroyed");
        }
    }

    /**
     * Tears the VM down: retires every vCPU first (each stops running and every later use of a stale
     * {@link Vcpu} handle fails), then releases the paging structures, then waits for host-side accesses
     * and returns the guest frames. Nothing of this VM can touch a frame once the host reuses it.
     */
    void destroy() {
        destroyed = true;
        synchronized (pauseControl) {
            throttlePercent = 0;
            if (throttler != null) {
                java.util.concurrent.locks.LockSupport.unpark(throttler); // it sees destroyed and ends
            }
        }
        long[] kicks = new long[vcpus.size()];
        for (int i = 0; i < kicks.length; i++) {
            kicks[i] = vcpus.get(i).retire();
        }
        for (int i = 0; i < kicks.length; i++) {
            vcpus.get(i).awaitRetired(kicks[i]); // a vCPU of this VM destroying it keeps serving its own requests
        }
        backend.release();
        hostAccesses.synchronize(); // host accesses and populates that passed the destroyed check have ended
        io.vmpage.engine.swap.SwapDevice swap = host.swap();
        // From the top down: the free list gives back the frame freed last first, so the next VM's pages,
        // filled from the bottom up, get ascending frames (a copy into descending frames runs slower)
        long[] batch = new long[256]; // private frames go back to the host 256 at a time, with one CAS
        int batched = 0;
        for (long gfn = p2m.frames() - 1; gfn >= 0; gfn--) {
            long e = p2m.entry(gfn);
            long mfn = p2m.machineFrame(gfn);
            if (mfn >= 0 && p2mWriter.remove(gfn, mfn)) {
                if (FrameDescriptor.type(host.allocator().descriptor(mfn)) == FrameDescriptor.TYPE_SHARED) {
                    freeUnmappedFrame(mfn);
                    continue;
                }
                batch[batched++] = mfn;
                if (batched == batch.length) {
                    host.allocator().free(batch, batched);
                    populatedFrames.addAndGet(-batched);
                    batched = 0;
                }
            } else if (!P2mEntry.isPresent(e) && P2mEntry.kind(e) == P2mEntry.SWAPPED && swap != null
                && p2mWriter.compareAndSet(gfn, e, P2mEntry.EMPTY)) {
                swap.free(P2mEntry.payloadOf(e)); // its page on swap goes with it
                swappedFrames.decrementAndGet();
            }
        }
        host.allocator().free(batch, batched);
        populatedFrames.addAndGet(-batched);
    }

    /** What the paging backend may use of this VM ({@link VmContext}); never handed to embedders. */
    private final class Context implements VmContext {
        @Override
        public int id() {
            return id;
        }

        @Override
        public VmConfig config() {
            return config;
        }

        @Override
        public MachineMemory memory() {
            return host.memory();
        }

        @Override
        public FrameAllocator frames() {
            return host.allocator();
        }

        @Override
        public GuestPhysicalMap physicalMap() {
            return p2m;
        }

        @Override
        public PhysicalMapWriter physicalMapWriter() {
            return p2mWriter;
        }

        @Override
        public DirtyLog.Writer dirtyLog() {
            return dirty;
        }

        @Override
        public long populate(long gfn) {
            return Vm.this.populate(gfn);
        }

        @Override
        public void releaseFrame(long mfn) {
            Vm.this.releaseFrame(mfn);
        }

        @Override
        public void awaitHostAccesses() {
            Vm.this.awaitHostAccesses();
        }

        @Override
        public void flushRemoteTlbs() {
            Vm.this.flushRemoteTlbs();
        }

        @Override
        public void privateFrameAdded() {
            populatedFrames.incrementAndGet();
        }

        @Override
        public void privateFrameRemoved() {
            populatedFrames.decrementAndGet();
        }

        @Override
        public long allocateTableFrame() {
            return host.allocateTableFrame(id);
        }

        @Override
        public void sharedFrameCreated() {
            host.sharedFrameCreated();
        }

        @Override
        public void sharedFrameReleased() {
            host.sharedFrameReleased();
        }

        @Override
        public void copyOnWriteBroken() {
            host.copyOnWriteBroken();
        }

        @Override
        public void dropSharedReference(long mfn) {
            host.dropSharedReference(mfn);
        }

        @Override
        public void lockServingRequests(java.util.concurrent.locks.ReentrantLock lock) {
            Vcpu.lockServingRequests(lock);
        }
    }

    /** What the dirty log needs of this VM: its size, its vCPUs, and the backend's write tracking. */
    private final class Logged implements DirtyLog.LoggedVm {
        @Override
        public int id() {
            return id;
        }

        @Override
        public String pagingMode() {
            return config.paging().name();
        }

        @Override
        public int vcpus() {
            return config.vcpus();
        }

        @Override
        public long frames() {
            return p2m.frames();
        }

        @Override
        public boolean supports(DirtyTracking method) {
            return backend.supports(method);
        }

        @Override
        public void startDirtyLog(DirtyTracking method) {
            backend.startDirtyLog(method);
        }

        @Override
        public void collectDirtyBits(DirtyBitmap bitmap) {
            backend.collectDirtyBits(bitmap);
        }

        @Override
        public void markUntracked(DirtyBitmap bitmap) {
            backend.markUntracked(bitmap);
        }

        @Override
        public void writeProtect(DirtySnapshot harvested) {
            backend.writeProtect(harvested);
        }

        @Override
        public void flushRemoteTlbs() {
            Vm.this.flushRemoteTlbs();
        }
    }

    @Override
    public String toString() {
        return "Vm[" + id + ", " + config.paging() + ", " + config.memoryBytes() + " bytes, " + vcpus.size() + " vCPUs]";
    }
}
