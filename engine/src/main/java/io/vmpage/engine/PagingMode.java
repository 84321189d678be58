package io.vmpage.engine;

/** How a VM's guest-virtual addresses reach machine frames. */
public enum PagingMode {
    /**
     * Hardware-assisted (Intel EPT / AMD NPT): the guest owns its page tables and edits them without
     * exits; the engine keeps the EPT and handles EPT violations.
     */
    NESTED,
    /**
     * Full virtualization with shadow page tables (KVM's shadow MMU, VMware's early BT monitors): the
     * hardware walks engine-built tables mapping guest-virtual straight to machine frames; guest
     * page-table pages are write-protected, CR3 loads and INVLPG exit.
     */
    SHADOW,
    /**
     * Paravirtual direct paging (Xen PV): guest tables hold machine frame numbers; the guest changes them
     * only through the validated, batched {@code mmu_update} hypercall.
     */
    PARAVIRTUAL
}
