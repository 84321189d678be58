package io.vmpage.engine.paging;

import io.vmpage.engine.Hypercalls;
import io.vmpage.engine.Internal;
import io.vmpage.engine.dirty.DirtyBitmap;
import io.vmpage.engine.dirty.DirtySnapshot;
import io.vmpage.engine.dirty.DirtyTracking;
import io.vmpage.engine.paging.nested.NestedPaging;
import io.vmpage.engine.paging.pv.ParavirtualPaging;
import io.vmpage.engine.paging.shadow.ShadowPaging;
import io.vmpage.mmu.Translation;

/**
 * The engine's side of one paging mode: what it does when a vCPU's hardware reports a fault, and how the
 * guest's privileged paging operations reach the hardware (directly, by an exit, or by a hypercall).
 * One instance per VM; its methods run on the vCPU thread that exited. What a mode can do beyond the
 * common operations it says itself ({@link #sharing}, {@link #unmap}, {@link #hypercalls},
 * {@link #supports}), so a new mode or capability is added in one place and nobody dispatches on the
 * mode's class.
 */
@Internal
public interface PagingBackend {
    /** The backend of {@code vm}'s paging mode. */
    static PagingBackend create(VmContext vm) {
        return switch (vm.config().paging()) {
            case NESTED -> new NestedPaging(vm);
            case SHADOW -> new ShadowPaging(vm);
            case PARAVIRTUAL -> new ParavirtualPaging(vm);
        };
    }

    /** Outcome of {@link #handleFault}: retry the access. */
    int RETRY = 0;
    /** Outcome of {@link #handleFault}: deliver the #PF in the translation to the guest kernel. */
    int INJECT = 1;
    /**
     * Outcome of {@link #handleFault}: the engine emulates this one access. The backend has called
     * {@link VcpuContext#emulateAt(long, long)} with the host-physical address the access uses (bypassing the
     * TLB); after a write completes the vCPU calls {@link #afterEmulatedWrite}.
     */
    int EMULATE = 2;

    /** Prepares a new vCPU's hardware (VPID, EPTP or shadow root). */
    void attach(VcpuContext vcpu);

    /** The guest loads CR3. */
    void loadCr3(VcpuContext vcpu, long cr3);

    /** The guest writes CR0. Passed straight to the hardware unless the mode must protect itself. */
    default void setCr0(VcpuContext vcpu, long value) {
        vcpu.mmu().setCr0(value);
    }

    /** The guest writes CR4. */
    default void setCr4(VcpuContext vcpu, long value) {
        vcpu.mmu().setCr4(value);
    }

    /** The guest writes IA32_EFER. */
    default void setEfer(VcpuContext vcpu, long value) {
        vcpu.mmu().setEfer(value);
    }

    /** The guest executes INVLPG. */
    void invlpg(VcpuContext vcpu, long va);

    /**
     * A translation fault on {@code vcpu}; returns {@link #RETRY} or {@link #INJECT}, or throws
     * {@link io.vmpage.engine.GuestFaultException} for a fault the guest cannot recover from.
     */
    int handleFault(VcpuContext vcpu, Translation fault);

    /**
     * Called on the vCPU thread after an emulated write of {@code length} bytes at guest-physical
     * {@code gpa} has been stored (shadow paging: re-sync the shadow entries derived from that guest
     * page-table entry).
     */
    default void afterEmulatedWrite(VcpuContext vcpu, long gpa, int length) {
    }

    /**
     * Unhooks guest frame {@code gfn} from machine frame {@code mfn}: its p2m entry becomes
     * {@code replacement} (not present) and every mapping of the frame for the guest goes; false, nothing
     * changed, when it no longer maps {@code mfn} or the mode keeps it (a shadowed guest table; under
     * paravirtual paging a frame the guest's own tables still map). The caller flushes every vCPU and
     * waits for the host accesses in flight before it reuses the frame: what a discard, a balloon and a
     * swap-out do.
     */
    boolean unmap(long gfn, long mfn, long replacement);

    /**
     * Working-set sampling (ESX): removes the mapping of guest frame {@code gfn} (an EPT leaf, or every
     * shadow leaf of the frame), keeping the frame, so the guest's next access exits and maps it again.
     * False when it was not mapped. The caller flushes the VM's TLBs.
     */
    default boolean unmapForSampling(long gfn) {
        throw new IllegalStateException("working-set sampling is not supported under this paging mode");
    }

    /** Whether guest frame {@code gfn} is mapped for the guest now (an EPT leaf, or a shadow leaf of its frame). */
    default boolean mapped(long gfn) {
        throw new IllegalStateException("working-set sampling is not supported under this paging mode");
    }

    /** This mode's copy-on-write page sharing, or null when it never shares a frame. */
    default FrameSharing sharing() {
        return null;
    }

    /**
     * The guest's CR3 on {@code vcpu} (with its PCID bits), -1 when the guest never loaded one: what a
     * migration carries. The hardware's CR3 by default (nested paging: the guest owns it).
     */
    default long guestCr3(VcpuContext vcpu) {
        return vcpu.mmu().registers().cr3() & ~io.vmpage.mmu.ControlRegisters.CR3_NO_FLUSH;
    }

    /**
     * The page tables this mode keeps in machine-frame terms, canonicalized for a migration (paravirtual:
     * Xen's save); empty for modes whose guest tables hold guest frame numbers. The VM is paused.
     */
    default java.util.List<io.vmpage.engine.PvTable> exportTables() {
        return java.util.List.of();
    }

    /**
     * Rebuilds {@link #exportTables}'s tables on this VM's machine frames and re-validates them, before
     * any vCPU state goes in (paravirtual: Xen's restore). The VM is paused and never ran.
     */
    default void importTables(java.util.List<io.vmpage.engine.PvTable> tables) {
        if (!tables.isEmpty()) {
            throw new IllegalStateException("this paging mode keeps no page tables of its own to import");
        }
    }

    /** After every vCPU's state went in: drops what {@link #importTables} held only until then. */
    default void importDone() {
    }

    /** A guest CR3 as a migration carries it (paravirtual: the L4's guest frame instead of its machine frame). */
    default long canonicalCr3(long cr3) {
        return cr3;
    }

    /** {@link #canonicalCr3}'s inverse on this VM. */
    default long machineCr3(long canonicalCr3) {
        return canonicalCr3;
    }

    /**
     * Whether this mode's state travels as the registers alone ({@code Vm.exportState}): true when its
     * paging structures rebuild themselves from guest memory on the destination.
     */
    default boolean transfersState() {
        return true;
    }

    /** The paravirtual hypercall interface of {@code vcpu}, or null when this mode has none. */
    default Hypercalls hypercalls(VcpuContext vcpu) {
        return null;
    }

    // ------------------------------------------------------------------ dirty logging (see io.vmpage.engine.dirty.DirtyLog)

    /** Whether this mode can learn of writes by {@code method}. */
    default boolean supports(DirtyTracking method) {
        return method != DirtyTracking.DIRTY_BITS;
    }

    /**
     * Logging has just been switched on with {@code method} ({@code DirtyLog.method()} already reads it):
     * revoke write access from every mapping of guest memory, or for DIRTY_BITS clear every D bit. The
     * caller flushes every vCPU's TLB afterwards.
     */
    void startDirtyLog(DirtyTracking method);

    /** DIRTY_BITS: moves every set D bit into {@code bitmap}, clearing it (the caller flushes TLBs). */
    default void collectDirtyBits(DirtyBitmap bitmap) {
    }

    /**
     * Marks the guest frames the hardware or the engine may have written without any write permission
     * the log could watch (paravirtual paging: the hardware's A/D updates in guest page tables).
     */
    default void markUntracked(DirtyBitmap bitmap) {
    }

    /** Revokes write access from every mapping of the frames in {@code harvested} (the caller flushes TLBs). */
    void writeProtect(DirtySnapshot harvested);

    /** Releases the host frames the backend owns (EPT or shadow tables). */
    void release();
}
