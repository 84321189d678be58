package io.vmpage.engine.paging;

import io.vmpage.engine.ExitReason;
import io.vmpage.engine.Internal;
import io.vmpage.engine.Vcpu;
import io.vmpage.mmu.Mmu;

/**
 * What a paging backend may do with the vCPU that exited into it, handed out by that {@link Vcpu}
 * (one per vCPU). Methods other than {@link #vcpu} run on the vCPU's owner thread only.
 */
@Internal
public interface VcpuContext {
    /** The public handle (for messages and for the hypercall interface's {@code vcpu()}). */
    Vcpu vcpu();

    int index();

    int vpid();

    /** The vCPU's translation hardware. */
    Mmu mmu();

    void countExit(ExitReason reason);

    /**
     * For a backend emulating the access being handled: use host-physical {@code hpa} (guest-physical
     * {@code gpa}) for this one access instead of a TLB translation.
     */
    void emulateAt(long hpa, long gpa);
}
