package io.vmpage.engine;

/** Why a vCPU left guest mode for the engine, named as KVM's exit statistics name them. */
public enum ExitReason {
    /** An EPT violation (nested paging): a guest-physical page the EPT does not map, or not for this access. */
    EPT_VIOLATION,
    /** An EPT misconfiguration: the engine's own EPT is malformed (never expected). */
    EPT_MISCONFIG,
    /** A #PF intercepted by the engine (shadow paging: a shadow miss the engine fills, invisible to the guest). */
    PAGE_FAULT,
    /** A guest write to one of its write-protected page-table pages, emulated by the engine (shadow paging). */
    WRITE_PROTECT,
    /** A guest MOV to CR3 (shadow paging intercepts it). */
    CR3_LOAD,
    /** A guest INVLPG (shadow paging intercepts it). */
    INVLPG,
    /** A hypercall (paravirtual paging: mmu_update, new base pointer, TLB operations). */
    HYPERCALL,
    /** A write to a page dirty logging had write-protected: the engine logged it and gave write access back. */
    DIRTY_LOG,
    /** The vCPU's dirty ring filled up (KVM_EXIT_DIRTY_RING_FULL): the rings were reaped before it re-entered. */
    DIRTY_RING_FULL,
    /** A write to a frame shared copy-on-write: the engine gave the guest frame a private copy. */
    COPY_ON_WRITE,
    /** A #PF the engine reflected into the guest, whose own handler then ran. */
    PAGE_FAULT_INJECTED
}
