package io.vmpage.engine;

import io.vmpage.engine.paging.PagingBackend;
import io.vmpage.engine.paging.VcpuContext;
import io.vmpage.mmu.Access;
import io.vmpage.mmu.Fault;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Mmu;
import io.vmpage.mmu.Translation;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;

/**
 * A virtual CPU: one logical processor's translation hardware ({@link Mmu}) plus the loop a VMM runs
 * around it. Every guest access goes TLB, then walk, then (on a fault) exit to the engine's handler or
 * delivery to the guest kernel's #PF handler, then retry, as hardware and a VMM cooperate.
 *
 * <p><b>Threads.</b> One thread runs a vCPU at a time (its owner); several vCPUs of a VM run at once on
 * their own threads. Other threads reach a vCPU only through {@link #kick} requests: a remote TLB flush
 * ({@link Vm#flushRemoteTlbs}) or a guest inter-processor interrupt ({@link #sendIpi}), which the owner
 * serves at its next access, like KVM's {@code kvm_make_request} + kick.
 *
 * <p><b>Memory ordering of the request protocol.</b> A requester publishes its work (flush flag, IPI
 * queue), then increments {@link #kicks}; the owner stores {@link #mode} = IN_GUEST and then reads
 * {@code kicks} (both sequentially consistent), so either the owner sees the kick before it translates
 * again, or the requester sees IN_GUEST and waits for {@link #served} to reach its kick. A vCPU outside
 * guest mode (not running, or handling an exit) holds no translation in use, and serves pending work
 * when it re-enters.
 */
public final class Vcpu {
    /** {@link #mode}: no thread runs this vCPU. */
    private static final int OUTSIDE = 0;
    /** {@link #mode}: the owner runs guest code and may hold translations (TLB entries, an address being stored to). */
    private static final int IN_GUEST = 1;
    /**
     * {@link #mode}: the owner handles an exit in the engine. It holds no translation (a flush need not
     * wait for it) but it may still touch the VM's engine structures (a destroy must wait for it).
     */
    private static final int IN_EXIT = 2;
    private static final ThreadLocal<Vcpu> CURRENT = new ThreadLocal<>();

    private final Vm vm;
    private final int index;
    private final int vpid;
    private final Mmu mmu;
    private final MachineMemory memory;
    /** Exit counts by {@link ExitReason} ordinal: written by the owner only, read racily by reports. */
    private final long[] exits = new long[ExitReason.values().length];
    private final byte[] scratch = new byte[8];
    private GuestPageFaultHandler pageFaultHandler;
    private boolean userMode;
    private long guestPageFaults;
    /** Nesting depth of guest-mode entries by the owner thread. Owner only. */
    private int depth;
    /** Set by a backend that emulates the current access: host-physical address to use, -1 when none. */
    private long emulatedHpa = -1;
    private long emulatedGpa = -1;
    /** Guest-physical address of the last emulated write, until {@link #finishWrite} syncs it. Owner only. */
    private long pendingWriteGpa = -1;
    /** What this vCPU's paging backend may do with it ({@link VcpuContext}); never handed to embedders. */
    private final VcpuContext context = new Context();

    /** Requests posted to this vCPU. Incremented by requesters after publishing their work. */
    private final AtomicLong kicks = new AtomicLong();
    /** The last kick whose work the owner has done. Written by the owner, read by requesters. */
    private volatile long served;
    /** OUTSIDE, IN_GUEST or IN_EXIT. Written by the owner, read by requesters (flushes wait for IN_GUEST only, a destroy for IN_EXIT too). */
    private volatile int mode;
    /**
     * The thread that runs this vCPU, null when none. Written by the owner when it enters and leaves
     * (volatile); read by waiters, which stop waiting for a vCPU whose thread died while it ran it (it
     * can make no access any more), as a KVM vCPU whose thread exited is no longer running.
     */
    private volatile Thread owner;
    /**
     * The VM was destroyed: every later access or privileged operation fails. Written once by the
     * destroying thread before its kick; read by the owner in {@link #serviceRequests} and on entry.
     */
    private volatile boolean retired;
    /** A remote TLB flush is pending. Set by requesters before kicking; cleared by the owner. */
    private volatile boolean flushPending;
    private final ConcurrentLinkedQueue<Consumer<Vcpu>> ipis = new ConcurrentLinkedQueue<>();
    /** Nanoseconds to sleep outside guest mode, set by the VM's throttle timer before its kick; taken (0) by the owner. */
    private final AtomicLong throttle = new AtomicLong();
    /** Time held out by the throttle. Written by the owner, read racily by reports. */
    private volatile long throttledNanos;

    Vcpu(Vm vm, int index, int vpid) {
        this.vm = vm;
        this.index = index;
        this.vpid = vpid;
        this.memory = vm.host().memory();
        this.mmu = new Mmu(memory, vm.config().mmu());
    }

    public Vm vm() {
        return vm;
    }

    public int index() {
        return index;
    }

    public int vpid() {
        return vpid;
    }

    /** This vCPU's translation hardware (registers, TLB, statistics). Owner thread only. */
    public Mmu mmu() {
        return mmu;
    }

    /** The vCPU the calling thread is running, or null. */
    public static Vcpu current() {
        return CURRENT.get();
    }

    /** Installs the guest kernel's #PF handler. */
    public void setPageFaultHandler(GuestPageFaultHandler handler) {
        this.pageFaultHandler = handler;
    }

    /** Switches between user mode (CPL 3: accesses carry U/S) and supervisor mode. */
    public void setUserMode(boolean user) {
        this.userMode = user;
    }

    public boolean userMode() {
        return userMode;
    }

    public long exitCount(ExitReason reason) {
        return exits[reason.ordinal()];
    }

    /** #PFs delivered to the guest kernel's handler (with or without an exit, depending on the mode). */
    public long guestPageFaults() {
        return guestPageFaults;
    }

    private void countExit(ExitReason reason) {
        exits[reason.ordinal()]++;
    }

    /** The context the VM's backend attaches and serves this vCPU through. */
    VcpuContext context() {
        return context;
    }

    // ------------------------------------------------------------------ running

    /**
     * Runs {@code guestCode} on the calling thread as this vCPU in guest mode (VM entry ... VM exit).
     * The code must keep making accesses (or return) so requests posted to this vCPU get served.
     */
    public void run(Runnable guestCode) {
        enter();
        try {
            guestCode.run();
        } finally {
            leave();
        }
    }

    /**
     * Makes the calling thread run this vCPU in guest mode until {@link #detachThread()}: the open-ended
     * form of {@link #run}, for drivers (benchmarks, schedulers) whose loop is not one Runnable.
     */
    public void attachThread() {
        enter();
    }

    /** Ends an {@link #attachThread()} on the same thread. */
    public void detachThread() {
        if (depth == 0 || CURRENT.get() != this) {
            throw new IllegalStateException("this thread is not running " + this);
        }
        leave();
    }

    private void enter() {
        if (depth++ == 0) {
            Vcpu other = CURRENT.get();
            if (other != null && other != this) {
                depth--;
                throw new IllegalStateException("thread already runs vCPU " + other.index + " of VM " + other.vm.id());
            }
            CURRENT.set(this);
            owner = Thread.currentThread();
            try {
                reenterGuest();
            } catch (RuntimeException | Error e) { // retired: this thread does not run the vCPU after all
                depth = 0;
                mode = OUTSIDE;
                owner = null;
                CURRENT.remove();
                throw e;
            }
        }
    }

    private void leave() {
        if (--depth == 0) {
            mode = OUTSIDE;
            owner = null;
            CURRENT.remove();
        }
    }

    // ------------------------------------------------------------------ guest accesses

    private int access(int kind) {
        return userMode ? kind | Access.USER : kind;
    }

    // Each accessor: a thread running this vCPU (depth > 0) takes the hot path as it is; any other thread
    // goes through oneOff, which enters guest mode around the whole access.
    private static final int READ_BYTE = 0;
    private static final int WRITE_BYTE = 1;
    private static final int FETCH_BYTE = 2;
    private static final int READ_SHORT = 3;
    private static final int WRITE_SHORT = 4;
    private static final int READ_INT = 5;
    private static final int WRITE_INT = 6;
    private static final int READ_LONG = 7;
    private static final int WRITE_LONG = 8;

    public byte readByte(long gva) {
        if (depth == 0) {
            return (byte) oneOff(READ_BYTE, gva, 0);
        }
        return memory.getByte(hpa(gva, Access.READ));
    }

    public void writeByte(long gva, byte value) {
        if (depth == 0) {
            oneOff(WRITE_BYTE, gva, value);
            return;
        }
        memory.putByte(hpa(gva, Access.WRITE), value);
        finishWrite(1);
    }

    /** Fetches one instruction byte (an execute access). */
    public byte fetch(long gva) {
        if (depth == 0) {
            return (byte) oneOff(FETCH_BYTE, gva, 0);
        }
        return memory.getByte(hpa(gva, Access.FETCH));
    }

    public short readShort(long gva) {
        if (depth == 0) {
            return (short) oneOff(READ_SHORT, gva, 0);
        }
        return (gva & 1) == 0 ? memory.getShort(hpa(gva, Access.READ)) : (short) readUnaligned(gva, 2);
    }

    public void writeShort(long gva, short value) {
        if (depth == 0) {
            oneOff(WRITE_SHORT, gva, value);
        } else if ((gva & 1) == 0) {
            memory.putShort(hpa(gva, Access.WRITE), value);
            finishWrite(2);
        } else {
            writeUnaligned(gva, 2, value);
        }
    }

    public int readInt(long gva) {
        if (depth == 0) {
            return (int) oneOff(READ_INT, gva, 0);
        }
        return (gva & 3) == 0 ? memory.getInt(hpa(gva, Access.READ)) : (int) readUnaligned(gva, 4);
    }

    public void writeInt(long gva, int value) {
        if (depth == 0) {
            oneOff(WRITE_INT, gva, value);
        } else if ((gva & 3) == 0) {
            memory.putInt(hpa(gva, Access.WRITE), value);
            finishWrite(4);
        } else {
            writeUnaligned(gva, 4, value);
        }
    }

    public long readLong(long gva) {
        if (depth == 0) {
            return oneOff(READ_LONG, gva, 0);
        }
        return (gva & 7) == 0 ? memory.getLong(hpa(gva, Access.READ)) : readUnaligned(gva, 8);
    }

    public void writeLong(long gva, long value) {
        if (depth == 0) {
            oneOff(WRITE_LONG, gva, value);
        } else if ((gva & 7) == 0) {
            memory.putLong(hpa(gva, Access.WRITE), value);
            finishWrite(8);
        } else {
            writeUnaligned(gva, 8, value);
        }
    }

    /**
     * One access {@code op} by a thread that does not run this vCPU: enters guest mode, makes the whole
     * access (translate, store, dirty bookkeeping) there, and leaves, so that a remote flush (harvest,
     * discard, destroy) that sees this vCPU in guest mode waits until the store has landed.
     */
    private long oneOff(int op, long gva, long value) {
        enter();
        try {
            switch (op) {
                case READ_BYTE: return readByte(gva);
                case WRITE_BYTE: writeByte(gva, (byte) value); return 0;
                case FETCH_BYTE: return fetch(gva);
                case READ_SHORT: return readShort(gva);
                case WRITE_SHORT: writeShort(gva, (short) value); return 0;
                case READ_INT: return readInt(gva);
                case WRITE_INT: writeInt(gva, (int) value); return 0;
                case READ_LONG: return readLong(gva);
                case WRITE_LONG: writeLong(gva, value); return 0;
                default: throw new IllegalArgumentException("access " + op);
            }
        } finally {
            leave();
        }
    }

    /** Reads {@code length} bytes at {@code gva} (any alignment, may cross pages). */
    public void read(long gva, byte[] dst, int offset, int length) {
        java.util.Objects.checkFromIndexSize(offset, length, dst.length);
        boolean entered = enterForAccess();
        try {
            while (length > 0) {
                int chunk = (int) Math.min(length, MachineMemory.FRAME_SIZE - (gva & MachineMemory.FRAME_OFFSET_MASK));
                memory.getBytes(hpa(gva, Access.READ), dst, offset, chunk);
                gva += chunk;
                offset += chunk;
                length -= chunk;
            }
        } finally {
            leaveAfterAccess(entered);
        }
    }

    /**
     * Writes {@code length} bytes at {@code gva}. Each page is translated before any byte of it is
     * written; a fault on a later page leaves the earlier pages written (as a string store would).
     */
    public void write(long gva, byte[] src, int offset, int length) {
        java.util.Objects.checkFromIndexSize(offset, length, src.length);
        boolean entered = enterForAccess();
        try {
            while (length > 0) {
                int chunk = (int) Math.min(length, MachineMemory.FRAME_SIZE - (gva & MachineMemory.FRAME_OFFSET_MASK));
                memory.putBytes(hpa(gva, Access.WRITE), src, offset, chunk);
                finishWrite(chunk);
                gva += chunk;
                offset += chunk;
                length -= chunk;
            }
        } finally {
            leaveAfterAccess(entered);
        }
    }

    /** Little-endian, possibly page-crossing read: both pages are translated before the value is assembled. */
    private long readUnaligned(long gva, int size) {
        long first = hpa(gva, Access.READ);
        long second = crossesPage(gva, size) ? hpa(gva + size - 1, Access.READ) : -1;
        long value = 0;
        for (int i = 0; i < size; i++) {
            long hpa = addressOf(gva, i, first, second);
            value |= (memory.getByte(hpa) & 0xFFL) << (8 * i);
        }
        return value;
    }

    /** A page-crossing store translates both pages first, so a fault on either writes nothing (as x86 does). */
    private void writeUnaligned(long gva, int size, long value) {
        for (int i = 0; i < size; i++) {
            scratch[i] = (byte) (value >>> (8 * i));
        }
        if (crossesPage(gva, size)) { // rare: store byte by byte so each page's emulation sees its bytes
            hpa(gva, Access.WRITE);
            finishWrite(0);
            hpa(gva + size - 1, Access.WRITE);
            finishWrite(0);
            for (int i = 0; i < size; i++) {
                memory.putByte(hpa(gva + i, Access.WRITE), scratch[i]);
                finishWrite(1);
            }
            return;
        }
        long hpa = hpa(gva, Access.WRITE);
        for (int i = 0; i < size; i++) {
            memory.putByte(hpa + i, scratch[i]);
        }
        finishWrite(size);
    }

    private static boolean crossesPage(long gva, int size) {
        return (gva & MachineMemory.FRAME_OFFSET_MASK) + size > MachineMemory.FRAME_SIZE;
    }

    private static long addressOf(long gva, int i, long first, long second) {
        long byteVa = gva + i;
        if (second >= 0 && (byteVa >>> MachineMemory.FRAME_SHIFT) != (gva >>> MachineMemory.FRAME_SHIFT)) {
            return (second & ~MachineMemory.FRAME_OFFSET_MASK) | (byteVa & MachineMemory.FRAME_OFFSET_MASK);
        }
        return first + i;
    }

    /**
     * The host-physical address for {@code gva} and access {@code kind} ({@code Access.READ/WRITE/FETCH};
     * the current privilege level is added), handling every fault on the way: engine exits are served and
     * retried, a #PF goes to the guest kernel's handler.
     *
     * <p>The address stays valid only while the calling thread runs this vCPU ({@link #run} or
     * {@link #attachThread}): a remote TLB flush, a discard or a dirty-log harvest waits for a running
     * vCPU's next access, never for a thread that merely holds an address it translated earlier. Use the
     * accessors ({@link #writeLong} and friends) to access memory; they do the whole access in guest mode.
     *
     * @throws GuestFaultException when the guest does not handle the fault
     */
    public long translate(long gva, int kind) {
        boolean entered = enterForAccess();
        try {
            return hpa(gva, kind);
        } finally {
            leaveAfterAccess(entered);
        }
    }

    /** Translation inside guest mode (the caller entered it), with the current privilege added. */
    private long hpa(long gva, int kind) {
        return translateInGuest(gva, access(kind));
    }

    /**
     * Enters guest mode for one access when the calling thread does not run this vCPU yet; true when it
     * did (the caller then leaves in {@link #leaveAfterAccess}). The whole access (translate, store, dirty
     * bookkeeping) happens inside guest mode, so a remote flush (harvest, discard, destroy) that sees
     * this vCPU in guest mode waits until the store has landed.
     */
    private boolean enterForAccess() {
        if (depth != 0) {
            return false;
        }
        enter();
        return true;
    }

    /**
     * As {@link #enterForAccess}, for a privileged operation (CR writes, INVLPG) that may exit into the
     * engine: it runs in guest mode too, so a destroy waits for it, and it fails once the VM is destroyed.
     */
    private boolean enterForPrivileged() {
        if (depth != 0) {
            checkNotRetired();
            return false;
        }
        enter();
        return true;
    }

    private void leaveAfterAccess(boolean entered) {
        if (entered) {
            leave();
        }
    }

    /**
     * After a privileged operation: a thread that runs this vCPU on goes outside guest mode now if its
     * VM paused or throttled it meanwhile (the operation may have served that kick while it waited in
     * the engine, where it could not hold); a one-off caller leaves, and its next entry holds.
     */
    private void leaveAfterPrivileged(boolean entered) {
        if (entered) {
            leave();
        } else if (mode == IN_GUEST && holdRequested()) { // not from an IPI handler run inside an exit
            holdOutsideGuest();
        }
    }

    private long translateInGuest(long gva, int access) {
        if (kicks.get() != served) {
            serviceRequests();
        }
        long hpa = mmu.translate(gva, access);
        return hpa >= 0 ? hpa : translateAfterFault(gva, access);
    }

    /** The fault loop, kept out of the hit path so that path stays small whatever faults the JIT saw. */
    private long translateAfterFault(long gva, int access) {
        while (true) {
            handleFault(gva, access); // the last translation faulted
            if (emulatedHpa >= 0) {
                long hpa = emulatedHpa;
                if (Access.isWrite(access)) {
                    pendingWriteGpa = emulatedGpa;
                }
                emulatedHpa = -1;
                return hpa;
            }
            long hpa = mmu.translate(gva, access);
            if (hpa >= 0) {
                return hpa;
            }
        }
    }


    /** After a store: if it was emulated, let the backend sync what depends on the bytes written. */
    private void finishWrite(int length) {
        if (pendingWriteGpa >= 0) {
            long gpa = pendingWriteGpa;
            pendingWriteGpa = -1;
            if (length > 0) {
                vm.dirtyWriter().markHost(gpa >>> MachineMemory.FRAME_SHIFT);
                vm.dirtyWriter().markHost((gpa + length - 1) >>> MachineMemory.FRAME_SHIFT);
            }
            vm.backend().afterEmulatedWrite(context, gpa, length);
        }
    }

    private void handleFault(long gva, int access) {
        Translation t = mmu.lastTranslation();
        switch (t.fault) {
            case Fault.PAGE_FAULT:
            case Fault.EPT_VIOLATION:
            case Fault.EPT_MISCONFIG: {
                int outcome = exitTo(t);
                if (outcome == PagingBackend.INJECT) {
                    deliverPageFault(t.faultAddress, t.errorCode);
                }
                return;
            }
            case Fault.GENERAL_PROTECTION:
                throw new GuestFaultException(Fault.GENERAL_PROTECTION, 0, gva);
            default:
                throw new GuestFaultException(t.fault, t.errorCode, t.faultAddress);
        }
    }

    /**
     * Leaves guest mode while the engine handles the fault, then re-enters (serving what came meanwhile).
     * A fault taken by an IPI handler that runs while this vCPU waits inside an exit returns to that exit.
     */
    private int exitTo(Translation t) {
        int outer = mode;
        mode = IN_EXIT;
        try {
            return vm.backend().handleFault(context, t);
        } finally {
            if (vm.dirtyWriter().takeRingFull(index)) { // KVM_EXIT_DIRTY_RING_FULL: reaped before this vCPU re-enters
                countExit(ExitReason.DIRTY_RING_FULL);
                vm.dirtyLog().reap();
            }
            if (outer == IN_EXIT) {
                mode = IN_EXIT;
            } else {
                reenterGuest();
            }
        }
    }

    private void deliverPageFault(long cr2, int errorCode) {
        guestPageFaults++;
        GuestPageFaultHandler handler = pageFaultHandler;
        boolean wasUser = userMode;
        userMode = false; // the handler runs in the guest kernel
        boolean handled;
        try {
            handled = handler != null && handler.onPageFault(this, cr2, errorCode);
        } finally {
            userMode = wasUser;
        }
        if (!handled) {
            throw new GuestFaultException(Fault.PAGE_FAULT, errorCode, cr2);
        }
    }

    // ------------------------------------------------------------------ privileged paging operations

    /** The guest's MOV to CR3 (with the no-flush bit under CR4.PCIDE). */
    public void loadCr3(long cr3) {
        boolean entered = enterForPrivileged();
        try {
            vm.backend().loadCr3(context, cr3);
        } finally {
            leaveAfterPrivileged(entered);
        }
    }

    /** The guest's INVLPG. */
    public void invlpg(long va) {
        boolean entered = enterForPrivileged();
        try {
            vm.backend().invlpg(context, va);
        } finally {
            leaveAfterPrivileged(entered);
        }
    }

    /** The guest writes CR4 (PCIDE, PGE, LA57, SMEP); the paging mode may refuse a value it cannot honour (#GP). */
    public void setCr4(long cr4) {
        boolean entered = enterForPrivileged();
        try {
            vm.backend().setCr4(context, cr4);
        } finally {
            leaveAfterPrivileged(entered);
        }
    }

    /** The guest writes CR0 (WP, PG); the paging mode may refuse a value it cannot honour (#GP). */
    public void setCr0(long cr0) {
        boolean entered = enterForPrivileged();
        try {
            vm.backend().setCr0(context, cr0);
        } finally {
            leaveAfterPrivileged(entered);
        }
    }

    /** The guest writes IA32_EFER (NXE). */
    public void setEfer(long efer) {
        boolean entered = enterForPrivileged();
        try {
            vm.backend().setEfer(context, efer);
        } finally {
            leaveAfterPrivileged(entered);
        }
    }

    // ------------------------------------------------------------------ requests from other threads

    /** The last kick posted to this vCPU (a requester that posted one waits for at least its own). */
    long latestKick() {
        return kicks.get();
    }

    /** Posts a TLB flush; returns the kick number {@link #awaitFlush} waits for. */
    long requestFlush() {
        flushPending = true;
        return kicks.incrementAndGet();
    }

    /**
     * Retires this vCPU because its VM is being destroyed: from now on every access or privileged
     * operation by any thread throws {@link IllegalStateException} (KVM tears vCPUs down before the VM's
     * memory; here a stale handle must never reach freed frames). Returns the kick that
     * {@link #awaitRetired} waits for. The destroyer retires every vCPU before it waits for any, so a vCPU
     * whose exit waits for another's flush is released by that one's retirement.
     */
    long retire() {
        retired = true;
        return kicks.incrementAndGet();
    }

    /**
     * Waits until the owner has let go after {@link #retire}: it is outside guest mode and outside any
     * exit, or has seen the retirement. A vCPU retiring itself (the destroying thread runs it) does not
     * wait: its next access fails.
     */
    void awaitRetired(long target) {
        Vcpu self = current();
        if (self == this) {
            return;
        }
        for (int spins = 1; mode != OUTSIDE && served < target && !ownerDied(spins); spins++) {
            if (self != null && self.retired) {
                self.served = Long.MAX_VALUE; // retired too: nobody waits for it any more; its next access fails
            } else if (self != null) {
                self.serviceRequestsWhileWaiting();
            }
            pause(spins);
        }
    }

    /**
     * The owner saw the retirement: it drops its translations, and from now on every access takes the
     * slow path ({@code served} never equals {@code kicks} again) and fails here.
     */
    private void retiredFault() {
        served = Long.MAX_VALUE;
        mmu.flushAll();
        throw new IllegalStateException(this + " belongs to a destroyed VM: it cannot run any more");
    }

    /** Fails when the VM was destroyed (privileged operations that reach the engine without an access). */
    private void checkNotRetired() {
        if (retired) {
            retiredFault();
        }
    }

    /**
     * Sends a guest inter-processor interrupt: {@code handler} runs on this vCPU's thread at its next
     * access. Returns the kick number; {@link #awaitIpi} waits for it.
     */
    public long sendIpi(Consumer<Vcpu> handler) {
        ipis.add(handler);
        return kicks.incrementAndGet();
    }

    /**
     * Waits until this vCPU has served kick {@code target}, or is outside guest mode (then it will serve
     * it on entry). {@code waiter}, the calling vCPU if any, keeps serving its own requests meanwhile, so
     * two vCPUs waiting on each other make progress (as IPIs taken while spinning do).
     */
    void awaitFlush(long target, Vcpu waiter) {
        for (int spins = 1; mode == IN_GUEST && served < target && !ownerDied(spins); spins++) {
            if (waiter != null) {
                waiter.serviceRequestsWhileWaiting();
            }
            pause(spins);
        }
    }

    /**
     * Takes an engine lock (KVM's mmu_lock) from any thread; a vCPU thread keeps serving its flushes and
     * IPIs while it waits, so a holder waiting for a remote TLB flush cannot deadlock with it.
     */
    static void lockServingRequests(java.util.concurrent.locks.ReentrantLock lock) {
        if (lock.tryLock()) {
            return;
        }
        Vcpu self = current();
        for (int spins = 1; !lock.tryLock(); spins++) {
            if (self != null) {
                self.serviceRequestsWhileWaiting();
            }
            pause(spins);
        }
    }

    /**
     * For a waiter's loop, checked every 1024 spins: the thread that ran this vCPU ended without
     * leaving it (it died inside an access or while attached), so it is outside guest mode in effect.
     */
    private boolean ownerDied(int spins) {
        if ((spins & 1023) != 0) {
            return false;
        }
        Thread t = owner;
        return t != null && !t.isAlive();
    }

    /**
     * Spin-wait step: spin briefly, then yield now and then, so a waiter does not burn the time slice
     * the vCPU it waits for needs when threads outnumber cores.
     */
    private static void pause(int spins) {
        if ((spins & 63) == 0) {
            Thread.yield();
        } else {
            Thread.onSpinWait();
        }
    }

    /**
     * Waits until this vCPU has run the IPI sent as kick {@code target}, or is outside guest mode: a vCPU
     * that no thread is running runs pending IPIs before its next access, which is all a TLB shootdown
     * needs (as Linux skips CPUs in lazy-TLB mode). The calling vCPU keeps serving its own requests.
     */
    public void awaitIpi(long target) {
        Vcpu waiter = current();
        for (int spins = 1; mode == IN_GUEST && served < target && !ownerDied(spins); spins++) {
            if (waiter != null) {
                waiter.serviceRequestsWhileWaiting();
            }
            pause(spins);
        }
    }

    /**
     * A spin-wait hint for guest code waiting on something (a guest spinlock, an IPI acknowledgment):
     * serves this vCPU's pending flushes and IPIs, as a CPU spinning with interrupts enabled takes them,
     * so two vCPUs waiting on each other make progress. Owner thread only.
     */
    public void relax() {
        serviceRequests();
        Thread.onSpinWait();
    }

    /**
     * Serves pending flushes and IPIs, then holds this vCPU outside guest mode if its VM is paused or
     * throttled. Owner thread only, and only where it holds no engine lock: at the start of an access,
     * in guest code's spin-waits ({@link #relax}), on (re-)entry to guest mode.
     */
    void serviceRequests() {
        if (serveFlushesAndIpis() && mode == IN_GUEST && holdRequested()) {
            holdOutsideGuest();
        }
    }

    /**
     * Serves pending flushes and IPIs while the owner waits inside the engine (for a lock, a remote
     * flush, a frame another thread brings in), so that nobody waiting on this vCPU waits forever, but
     * never holds it there: it may hold engine locks or be inside a host access. A pause or throttle
     * request served here is taken when the vCPU re-enters guest mode ({@link #reenterGuest},
     * {@link #leaveAfterPrivileged}), and a pauser still waiting kicks again ({@link #awaitOutside}).
     */
    void serviceRequestsWhileWaiting() {
        serveFlushesAndIpis();
    }

    /** Serves what the kicks since the last call posted; false when there was none. Owner thread only. */
    private boolean serveFlushesAndIpis() {
        long k = kicks.get();
        if (k == served) {
            return false;
        }
        if (retired) {
            retiredFault();
        }
        if (flushPending) {
            flushPending = false;
            mmu.flushAll();
        }
        Consumer<Vcpu> ipi;
        while ((ipi = ipis.poll()) != null) {
            ipi.accept(this);
        }
        if (k > served) { // an IPI handler's own accesses may have served a later kick already
            served = k;
        }
        return true;
    }

    /** Whether the VM asks this vCPU to stay outside guest mode now (paused, or a throttle sleep due). */
    private boolean holdRequested() {
        return vm.pauseRequested() || throttle.get() != 0;
    }

    /**
     * Enters guest mode (from outside, or back from an exit): serves what was posted meanwhile, and
     * holds the vCPU outside if its VM is paused or throttled, even when a wait inside the exit served
     * that kick already (the kick alone would then be lost, and a pauser would wait forever).
     */
    private void reenterGuest() {
        mode = IN_GUEST;
        serveFlushesAndIpis();
        if (holdRequested()) {
            holdOutsideGuest();
        }
        vm.noteEntered(); // before the access: a pause that waits for this vCPU sees it
    }

    /**
     * Leaves guest mode while the VM is paused, or for the sleep the VM's throttle asked for, then
     * re-enters and serves what was posted meanwhile (a flush sent while this vCPU was outside did not
     * wait for it). Only ever from guest mode, never inside an exit, so no engine lock is held.
     */
    private void holdOutsideGuest() {
        mode = OUTSIDE; // the pauser, remote flushes and a destroy stop waiting for this vCPU
        try {
            long sleep = throttle.getAndSet(0);
            if (sleep > 0) {
                long start = System.nanoTime();
                long end = start + sleep;
                for (long left = sleep; left > 0 && !retired; left = end - System.nanoTime()) {
                    java.util.concurrent.locks.LockSupport.parkNanos(left);
                }
                throttledNanos += System.nanoTime() - start;
            }
            for (int spins = 1; vm.pauseRequested() && !retired; spins++) {
                if (spins < 4096) {
                    pause(spins);
                } else {
                    java.util.concurrent.locks.LockSupport.parkNanos(20_000); // paused for long: stop burning a core
                }
            }
        } finally {
            mode = IN_GUEST;
        }
        if (retired) { // let go because the vCPU was retired: it never runs guest code again (retire's kick may not be posted yet)
            retiredFault();
        }
        serviceRequests();
    }

    /**
     * Loads {@code state} while no thread runs this vCPU (its VM is paused): EFER, CR4 and CR0 as the
     * guest's own writes, then the guest's CR3 through the paging mode.
     */
    void importState(VcpuState state) {
        PagingBackend backend = vm.backend();
        backend.setEfer(context, state.efer());
        backend.setCr4(context, state.cr4());
        backend.setCr0(context, state.cr0());
        if (state.cr3Loaded()) {
            backend.loadCr3(context, backend.machineCr3(state.cr3()));
        }
        userMode = state.userMode();
    }

    /** Asks this vCPU to leave guest mode at its next access because its VM is pausing. */
    void requestPause() {
        kicks.incrementAndGet();
    }

    /**
     * Waits until this vCPU is outside guest mode and outside any exit (paused, or not run by any
     * thread): it then touches neither guest memory nor the engine until its VM resumes. A vCPU in guest
     * mode that served every kick without holding (it served the pause's kick where it could not hold,
     * e.g. waiting for a flush from guest code) is kicked again, so its next access holds it.
     */
    void awaitOutside() {
        Vcpu self = current();
        for (int spins = 1; mode != OUTSIDE && !retired && !ownerDied(spins); spins++) {
            if (self != null) {
                self.serviceRequestsWhileWaiting();
            }
            if ((spins & 255) == 0 && mode == IN_GUEST && served == kicks.get()) {
                kicks.incrementAndGet();
            }
            pause(spins);
        }
    }

    /** Asks this vCPU to sleep {@code nanos} outside guest mode at its next access (the VM's throttle). */
    void requestThrottle(long nanos) {
        throttle.set(nanos);
        kicks.incrementAndGet();
    }

    /** Nanoseconds this vCPU has been held out of guest mode by its VM's throttle (a racy read while it runs). */
    public long throttledNanos() {
        return throttledNanos;
    }

    /**
     * The paravirtual hypercall interface of this vCPU (Xen PV's mmu_update, mmuext_op and memory_op).
     *
     * @throws IllegalStateException when the VM's paging mode is not {@link PagingMode#PARAVIRTUAL}
     */
    public Hypercalls hypercalls() {
        Hypercalls h = vm.backend().hypercalls(context);
        if (h != null) {
            return h;
        }
        throw new IllegalStateException(this + " runs in paging mode " + vm.pagingMode()
            + ": hypercalls need paging mode PARAVIRTUAL");
    }

    /** The backend's view of this vCPU: its hardware, its exit counts, the emulation hook. */
    private final class Context implements VcpuContext {
        @Override
        public Vcpu vcpu() {
            return Vcpu.this;
        }

        @Override
        public int index() {
            return index;
        }

        @Override
        public int vpid() {
            return vpid;
        }

        @Override
        public Mmu mmu() {
            return mmu;
        }

        @Override
        public void countExit(ExitReason reason) {
            Vcpu.this.countExit(reason);
        }

        @Override
        public void emulateAt(long hpa, long gpa) {
            emulatedHpa = hpa;
            emulatedGpa = gpa;
        }
    }

    @Override
    public String toString() {
        return "vCPU " + index + " of VM " + vm.id() + " (VPID " + vpid + ")";
    }
}
