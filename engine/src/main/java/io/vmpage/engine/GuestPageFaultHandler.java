package io.vmpage.engine;

/**
 * The guest kernel's #PF handler (vector 14), run on the faulting vCPU when a page fault reaches the
 * guest. Returns true when it fixed the cause (the access is retried), false to let the fault reach the
 * program as a {@link GuestFaultException}.
 */
@FunctionalInterface
public interface GuestPageFaultHandler {
    boolean onPageFault(Vcpu vcpu, long cr2, int errorCode);
}
