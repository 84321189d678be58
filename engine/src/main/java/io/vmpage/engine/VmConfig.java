package io.vmpage.engine;

import io.vmpage.mmu.MmuConfig;

/**
 * What a VM is created with. Immutable; {@code with*} returns a copy.
 *
 * @param memoryBytes guest-physical memory size (a whole number of 4 KiB frames)
 * @param vcpus number of vCPUs
 * @param paging paging mode
 * @param levels guest paging levels (4, or 5 for LA57)
 * @param mmu translation hardware of each vCPU
 */
public record VmConfig(long memoryBytes, int vcpus, PagingMode paging, int levels, MmuConfig mmu) {
    public VmConfig {
        if (memoryBytes <= 0 || (memoryBytes & 0xFFF) != 0) {
            throw new IllegalArgumentException("guest memory " + memoryBytes + " must be a positive multiple of 4096 bytes");
        }
        if (vcpus < 1 || vcpus > 256) {
            throw new IllegalArgumentException("vCPUs " + vcpus + " must be between 1 and 256");
        }
        if (levels != 4 && levels != 5) {
            throw new IllegalArgumentException("guest paging levels " + levels + " must be 4 or 5");
        }
        if (paging == null || mmu == null) {
            throw new IllegalArgumentException("paging mode and MMU configuration are required");
        }
    }

    /** {@code memoryBytes} of memory, one vCPU, nested paging, 4 levels, default MMU geometry. */
    public static VmConfig of(long memoryBytes) {
        return new VmConfig(memoryBytes, 1, PagingMode.NESTED, 4, MmuConfig.defaults());
    }

    public VmConfig withVcpus(int n) {
        return new VmConfig(memoryBytes, n, paging, levels, mmu);
    }

    public VmConfig withPaging(PagingMode mode) {
        return new VmConfig(memoryBytes, vcpus, mode, levels, mmu);
    }

    public VmConfig withLevels(int n) {
        return new VmConfig(memoryBytes, vcpus, paging, n, mmu);
    }

    public VmConfig withMmu(MmuConfig config) {
        return new VmConfig(memoryBytes, vcpus, paging, levels, config);
    }
}
