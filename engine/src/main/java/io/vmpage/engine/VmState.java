package io.vmpage.engine;

import java.util.List;

/**
 * What a VM carries besides its memory, exported from a paused VM and imported into a new one on the
 * destination of a migration ({@link Vm#exportState}, {@link Vm#importState}): its configuration and
 * each vCPU's {@link VcpuState}. Nested and shadow paging keep nothing else: the destination's EPT and
 * shadow pages fill on demand from guest memory, as KVM rebuilds them after a migration. Paravirtual
 * paging adds its page tables, canonicalized to guest frame numbers ({@link PvTable}), and the vCPUs'
 * CR3s name the guest frame of their L4, not its machine frame.
 *
 * @param config the VM's configuration
 * @param vcpus one state per vCPU, by index
 * @param pvTables a paravirtual VM's page tables (empty for the other modes)
 */
public record VmState(VmConfig config, List<VcpuState> vcpus, List<PvTable> pvTables) {
    public VmState {
        if (config == null || vcpus == null || vcpus.size() != config.vcpus()) {
            throw new IllegalArgumentException("a VM state needs its configuration and one vCPU state per vCPU");
        }
        if (pvTables == null || (!pvTables.isEmpty() && config.paging() != PagingMode.PARAVIRTUAL)) {
            throw new IllegalArgumentException("only a paravirtual VM's state carries page tables");
        }
        vcpus = List.copyOf(vcpus);
        pvTables = List.copyOf(pvTables);
    }

    /** The state of a VM whose paging mode keeps nothing but the registers. */
    public VmState(VmConfig config, List<VcpuState> vcpus) {
        this(config, vcpus, List.of());
    }
}
