package io.vmpage.engine.paging;

import io.vmpage.engine.Internal;

/**
 * Copy-on-write page sharing, as a paging mode that can share machine frames between guest frames
 * offers it ({@link PagingBackend#sharing()}; nested and shadow paging): the steps of a merge
 * ({@code Host.share}), the break a write causes, and the hook that lets a host store take part in the
 * protocol.
 */
@Internal
public interface FrameSharing {
    /**
     * Merge, first step: removes write access from {@code gfn}'s mapping so the caller can compare
     * contents after a remote flush and after the host stores in flight. Returns the machine frame
     * behind it, -1 when not populated.
     */
    long writeProtectForSharing(long gfn);

    /**
     * Merge, second step: makes {@code gfn}, still backed by {@code mfn} and not written since
     * {@link #writeProtectForSharing}, map shared frame {@code shared} (which may be {@code mfn} itself:
     * the first mapper turns its frame into the shared one). False, nothing changed, when a write or a
     * discard got there first. The caller flushes the VM's TLBs.
     */
    boolean mapShared(long gfn, long mfn, long shared);

    /**
     * Gives guest frame {@code gfn} a private, writable frame again ({@code vcpu} null for a host store)
     * and returns it, logged as written; -1 when the frame was discarded meanwhile.
     */
    long breakSharing(VcpuContext vcpu, long gfn);

    /**
     * Called inside a host-side store to guest frame {@code gfn}, before it writes the frame, so that a
     * merge in progress sees the store; false when the frame turns out to be shared (the caller breaks
     * sharing and tries again).
     */
    boolean beforeHostStore(long gfn);

    /**
     * Copy-on-write's frame for a write to {@code gfn}, which maps shared frame {@code shared}, in every
     * mode: the last mapper takes the frame over (no copy: KSM reuses a page mapped once), any other gets
     * a fresh copy. Returns the private frame, {@code shared} itself when taken over. The caller, under its
     * mode's lock, installs and counts it; after a copy it flushes and then drops its reference to
     * {@code shared}.
     *
     * @throws io.vmpage.engine.HostOutOfMemoryException when no frame is left for the copy
     */
    static long privateFrame(VmContext vm, long shared, long gfn) {
        io.vmpage.engine.memory.FrameAllocator frames = vm.frames();
        long d = frames.descriptor(shared);
        if (io.vmpage.engine.memory.FrameDescriptor.refs(d) == 1 && frames.compareAndSetDescriptor(shared, d,
                io.vmpage.engine.memory.FrameDescriptor.inUse(io.vmpage.engine.memory.FrameDescriptor.TYPE_DATA, vm.id(), 1))) {
            vm.sharedFrameReleased();
            return shared;
        }
        long mine = frames.allocate(vm.id(), io.vmpage.engine.memory.FrameDescriptor.TYPE_DATA);
        if (mine < 0) {
            throw new io.vmpage.engine.HostOutOfMemoryException("host out of machine frames breaking copy-on-write sharing of guest frame 0x"
                + Long.toHexString(gfn) + " of VM " + vm.id());
        }
        vm.memory().copyFrame(shared, mine);
        return mine;
    }
}
