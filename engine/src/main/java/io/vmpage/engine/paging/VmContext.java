package io.vmpage.engine.paging;

import io.vmpage.engine.Internal;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.memory.FrameAllocator;
import io.vmpage.engine.memory.GuestPhysicalMap;
import io.vmpage.engine.memory.PhysicalMapWriter;
import io.vmpage.mmu.MachineMemory;
import java.util.concurrent.locks.ReentrantLock;

/**
 * What a paging backend may use of its VM and host, handed out by the {@code Vm} that creates the
 * backend: the VM's memory services, its dirty log's engine side, its frame accounting, and the host's
 * frames. The frame-release rule of the engine ({@code io.vmpage.engine} package documentation) is
 * what {@link #releaseFrame} enforces.
 */
@Internal
public interface VmContext {
    int id();

    VmConfig config();

    /** The host's machine memory. */
    MachineMemory memory();

    /** The host's frame table, mutating handle. */
    FrameAllocator frames();

    /** The VM's guest-physical map. */
    GuestPhysicalMap physicalMap();

    /** The VM's guest-physical map, mutating handle. */
    PhysicalMapWriter physicalMapWriter();

    /** The engine side of the VM's dirty log. */
    DirtyLog.Writer dirtyLog();

    /**
     * The machine frame backing guest frame {@code gfn}, allocated (zero-filled) on first touch.
     *
     * @throws io.vmpage.engine.GuestFaultException with {@code MACHINE_CHECK} when {@code gfn} is beyond guest memory
     * @throws io.vmpage.engine.HostOutOfMemoryException when the host has no frame left
     */
    long populate(long gfn);

    /**
     * Gives back a machine frame already removed from the p2m (a shared frame loses one mapping); the
     * caller flushed every vCPU first. Waits for the host-side accesses that may still use it.
     */
    void releaseFrame(long mfn);

    /** Waits for the host-side accesses in flight; never from inside one. */
    void awaitHostAccesses();

    /** {@code Vm.flushRemoteTlbs}. */
    void flushRemoteTlbs();

    /** A frame became (again) private to this VM: counted in {@code Vm.populatedFrames}. */
    void privateFrameAdded();

    /** A private frame of this VM became shared. */
    void privateFrameRemoved();

    /** A zeroed host frame for a paging structure, charged to this VM. */
    long allocateTableFrame();

    /** A frame of this VM became a shared frame (host statistics). */
    void sharedFrameCreated();

    /** A shared frame became private again without being freed (its last mapper took it over). */
    void sharedFrameReleased();

    /** Drops one mapping of shared frame {@code mfn}; the last one frees it. The caller flushed TLBs first. */
    void dropSharedReference(long mfn);

    /** A write (by a vCPU or the host) gave a guest frame of this VM a private frame again (host statistics). */
    void copyOnWriteBroken();

    /**
     * Takes an engine lock (KVM's mmu_lock) from any thread; a vCPU thread keeps serving its flushes and
     * IPIs while it waits, so a holder waiting for a remote TLB flush cannot deadlock with it.
     */
    void lockServingRequests(ReentrantLock lock);
}
