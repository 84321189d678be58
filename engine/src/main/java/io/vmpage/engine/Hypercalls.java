package io.vmpage.engine;

/**
 * The paravirtual paging hypercalls one vCPU of a {@link PagingMode#PARAVIRTUAL} VM can make, modelled
 * on Xen's x86-64 PV interface. Obtained with {@link Vcpu#hypercalls()}; call it on the thread running
 * that vCPU.
 *
 * <p>Guest page tables hold machine frame numbers and are walked by the hardware directly; the guest
 * maps its page-table pages read-only and changes entries only through {@link #mmuUpdate}, which
 * validates every entry. Each call except {@link #machineFrame} and {@link #lastError} is one exit,
 * counted as {@link ExitReason#HYPERCALL} (a batch is one exit).
 *
 * <p>Refusals do not throw: a call returns false, -1, or (for a batch) the number of updates applied
 * before the refused one, and {@link #lastError()} says why in one line.
 */
public interface Hypercalls {
    /**
     * L1 entry bit 52 (ignored by the hardware) belongs to the hypervisor: while the dirty log is on, an
     * L1 entry the guest made writable is kept with RW clear and this bit set until the guest's first
     * write to the page, which the hypervisor logs and then restores RW. The guest must read an entry
     * with this bit as writable (as a Xen PV guest reads entries through {@code pte_val} conversions);
     * the bit is ignored in values passed to {@link #mmuUpdate}. (Xen itself runs a PV domain on shadow
     * tables while in log-dirty mode; this model protects the guest's own L1 entries instead.)
     * <pre>
     *  L1 entry   63  62..53  52          51..12   11..2  1   0
     *            +---+-------+-----------+--------+------+---+---+
     *            |NX |       |LOG_DIRTY_WP| MFN   | ...  |RW | P |   RW=0, LOG_DIRTY_WP=1: writable, not yet written
     *            +---+-------+-----------+--------+------+---+---+
     * </pre>
     */
    long LOG_DIRTY_WP = 1L << 52;

    /** The entry as the guest means it: a log-dirty write-protected entry reads as writable. */
    static long guestView(long entry) {
        return (entry & LOG_DIRTY_WP) != 0 ? (entry & ~LOG_DIRTY_WP) | io.vmpage.mmu.Pte.RW : entry;
    }

    /** The vCPU whose hypercalls these are. */
    Vcpu vcpu();

    /**
     * {@code XENMEM_populate_physmap} ({@code HYPERVISOR_memory_op}) for one 4 KiB extent: backs guest
     * frame {@code gfn} with a machine frame (allocated and zero-filled on first use, reused after) and
     * returns its MFN; -1 when {@code gfn} is outside the VM's memory or the host is out of frames.
     */
    long populatePhysmap(long gfn);

    /**
     * The guest's read-only view of its P2M (Xen's {@code phys_to_machine_mapping}, read from the guest's
     * own memory: no hypercall): the MFN backing {@code gfn}, or -1 when it is not populated (or out of range).
     */
    long machineFrame(long gfn);

    /**
     * {@code HYPERVISOR_mmu_update} with {@code MMU_NORMAL_PT_UPDATE} requests: for each i below
     * {@code count}, writes {@code vals[i]} into the page-table entry at machine address {@code ptrs[i]}
     * after validating it (Xen's {@code get_page_from_lN} rules: {@link PagingMode#PARAVIRTUAL}). Stops at the first refused
     * request, which leaves its entry unchanged; returns the number applied before it (Xen's
     * {@code success_count}), {@code count} when all were.
     *
     * @throws IllegalArgumentException when {@code count} exceeds either array
     */
    int mmuUpdate(long[] ptrs, long[] vals, int count);

    /** A one-request {@link #mmuUpdate}: true when applied. */
    default boolean mmuUpdate(long ptr, long val) {
        return mmuUpdate(new long[] {ptr}, new long[] {val}, 1) == 1;
    }

    /**
     * {@code MMUEXT_PIN_L1_TABLE} .. {@code MMUEXT_PIN_L4_TABLE} ({@code HYPERVISOR_mmuext_op}): validates
     * the table in machine frame {@code mfn} as a level-{@code level} table (recursively, typing the
     * tables it references) and keeps it typed until {@link #unpinTable}. False when refused (not this
     * VM's frame, typed otherwise, mapped writable, an invalid entry, or already pinned).
     */
    boolean pinTable(int level, long mfn);

    /** {@code MMUEXT_UNPIN_TABLE}: drops the pin; the table stays typed while still referenced or loaded. */
    boolean unpinTable(long mfn);

    /**
     * {@code MMUEXT_NEW_BASEPTR}: loads this vCPU's CR3 with {@code cr3}, whose table (bits 11:0, the
     * PCID, and bit 63, the no-flush bit, masked off) must be a validated L4 of this VM (pinned, or
     * already loaded on a vCPU). False, CR3 unchanged, otherwise.
     */
    boolean newBasePtr(long cr3);

    /** {@code MMUEXT_INVLPG_LOCAL}: INVLPG on this vCPU. */
    void invlpgLocal(long va);

    /** {@code MMUEXT_TLB_FLUSH_LOCAL}: flushes this vCPU's TLB and paging-structure caches. */
    void tlbFlushLocal();

    /**
     * {@code MMUEXT_INVLPG_ALL}: invalidates {@code va} on every vCPU of the VM, waiting for each running
     * one. Modelled as a full remote flush ({@link Vm#flushRemoteTlbs}), an allowed over-invalidation
     * that, unlike an IPI, never waits for a vCPU that is not running.
     */
    void invlpgAll(long va);

    /** Why the last refused call of this vCPU was refused (empty if none was). */
    String lastError();
}
