package io.vmpage.engine.policy;

/**
 * What a VM is promised, ESX's three parameters (Waldspurger, OSDI 2002, section 5): {@code min}, the
 * machine memory it is guaranteed (reserved when it is admitted, never reclaimed below), its {@code max}
 * (the guest's configured memory, {@code VmConfig.memoryBytes}), and its {@code shares}, its claim on the
 * memory between the two when the host is short (the idle memory tax weighs them).
 *
 * @param minBytes guaranteed machine memory, a whole number of 4 KiB frames, at most the VM's memory
 * @param shares the VM's memory shares (ESX's default for a VM is 10 per MiB of configured memory; any
 *     positive number works, only ratios count)
 */
public record Allocation(long minBytes, long shares) {
    public Allocation {
        if (minBytes < 0 || (minBytes & 0xFFF) != 0) {
            throw new IllegalArgumentException("min " + minBytes + " bytes must be a whole number of 4 KiB frames, at least 0");
        }
        if (shares <= 0) {
            throw new IllegalArgumentException("shares " + shares + " must be positive");
        }
    }

    /** Nothing guaranteed, ESX's default shares for {@code memoryBytes} of configured memory (10 per MiB). */
    public static Allocation defaultsFor(long memoryBytes) {
        return new Allocation(0, Math.max(1, 10 * (memoryBytes >> 20)));
    }

    /**
     * Machine memory a VM of {@code memoryBytes} needs besides its guest pages, reserved at admission:
     * its paging structures at their largest (one 4 KiB table per 2 MiB of guest memory, and the levels
     * above) and a frame per vCPU. ESX reserves a VM's overhead memory the same way.
     */
    public static long overheadBytes(long memoryBytes, int vcpus) {
        long frames = memoryBytes >> 12;
        long tables = (frames + 511) / 512 + (frames + 262_143) / 262_144 + 2;
        return (tables + vcpus) << 12;
    }
}
