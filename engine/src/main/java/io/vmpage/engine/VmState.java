package io.vmpage.engine;

import java.util.List;

/**
 * What a VM carries besides its memory, exported from a paused VM and imported into a new one on the
 * destination of a migration ({@link Vm#exportState}, {@link Vm#importState}): its configuration and
 * each vCPU's {@link VcpuState}. Nested and shadow paging keep nothing else: the destination's EPT and
 * shadow pages fill on demand from guest memory, as KVM rebuilds them after a migration.
 *
 * @param config the VM's configuration
 * @param vcpus one state per vCPU, by index
 */
public record VmState(VmConfig config, List<VcpuState> vcpus) {
    public VmState {
        if (config == null || vcpus == null || vcpus.size() != config.vcpus()) {
            throw new IllegalArgumentException("a VM state needs its configuration and one vCPU state per vCPU");
        }
        vcpus = List.copyOf(vcpus);
    }
}
