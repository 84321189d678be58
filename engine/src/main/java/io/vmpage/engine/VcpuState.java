package io.vmpage.engine;

/**
 * The architectural state of one vCPU that migrates with its VM, as the guest sees it: the control
 * registers and EFER (KVM's {@code KVM_GET_SREGS}), the privilege level, and the guest's CR3, which
 * for shadow paging is the guest's own table root, not the shadow root the hardware runs on.
 *
 * @param cr0 CR0
 * @param cr3 the guest's CR3 (guest-physical table root with PCID bits), meaningful when {@code cr3Loaded}
 * @param cr3Loaded whether the guest has loaded a CR3 (a vCPU that never did has no table root)
 * @param cr4 CR4
 * @param efer IA32_EFER
 * @param userMode whether the vCPU was running at CPL 3
 */
public record VcpuState(long cr0, long cr3, boolean cr3Loaded, long cr4, long efer, boolean userMode) {
}
