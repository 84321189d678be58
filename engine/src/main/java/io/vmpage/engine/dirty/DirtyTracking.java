package io.vmpage.engine.dirty;

/** How a VM's dirty log learns of guest writes (see {@link DirtyLog}). */
public enum DirtyTracking {
    /**
     * Write protection, as KVM without PML and Xen's log-dirty mode do it: enabling the log removes write
     * permission from every mapping of guest memory (EPT entries, shadow leaves, paravirtual L1 entries)
     * and flushes TLBs; the first write to a page exits, sets its bit and restores write permission; a
     * harvest write-protects the pages it reports again.
     */
    WRITE_PROTECT,
    /**
     * Dirty bits: the hardware sets the EPT D bit on the first write through an entry (EPTP bit 6); a
     * harvest collects and clears the D bits and flushes the TLB entries that cache them. Steady-state
     * writes never exit. Nested paging only: shadow and paravirtual guests own the D bits the hardware sets.
     */
    DIRTY_BITS,
    /**
     * Dirty ring, as KVM's {@code KVM_CAP_DIRTY_LOG_RING}: write protection detects the first write, and
     * the exit pushes the guest frame number onto the vCPU's own bounded ring instead of the shared bitmap;
     * a full ring exits ({@link io.vmpage.engine.ExitReason#DIRTY_RING_FULL}) and is reaped before the vCPU re-enters.
     */
    DIRTY_RING
}
