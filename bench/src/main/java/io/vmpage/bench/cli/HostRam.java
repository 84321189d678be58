package io.vmpage.bench.cli;

import io.vmpage.mmu.NativeMemoryException;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * How much RAM this host can still give a run that will touch all of its memory. Machine memory is mapped
 * lazily, so a mapping larger than the RAM left succeeds and the run is killed by the kernel when it
 * touches too much of it; a command that will touch everything checks first, with this.
 */
final class HostRam {
    private HostRam() {
    }

    /**
     * Bytes available: Linux's {@code MemAvailable} (free memory plus what can be reclaimed without
     * swapping), capped by the JDK's physical memory size (a container's limit inside one), or -1 when
     * neither is known here.
     */
    static long available() {
        long available = meminfo("MemAvailable:");
        long limit = totalMemory();
        if (available < 0) {
            return limit;
        }
        return limit < 0 ? available : Math.min(available, limit);
    }

    /**
     * The one-line refusal when a run touching {@code needed} bytes cannot fit in {@code available}
     * ({@code asked}: the options that decided the size, as typed), or null when it fits or nothing is known.
     */
    static String shortfall(String asked, long needed, long available, String what) {
        if (available < 0 || needed <= available) {
            return null;
        }
        return asked + " needs about " + gib(needed) + " of host RAM (" + what + ") but this host has " + gib(available)
            + " available";
    }

    private static String gib(long bytes) {
        String d = NativeMemoryException.describe(bytes);
        int open = d.indexOf('(');
        return open < 0 ? d : d.substring(open + 1, d.length() - 1);
    }

    private static long meminfo(String key) {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/meminfo"))) {
                if (line.startsWith(key)) {
                    String[] parts = line.substring(key.length()).trim().split("\\s+");
                    return Long.parseLong(parts[0]) * (parts.length > 1 && parts[1].equalsIgnoreCase("kB") ? 1024 : 1);
                }
            }
        } catch (IOException | RuntimeException notLinux) {
            return -1;
        }
        return -1;
    }

    /** The JDK's physical memory size, which is the container's memory limit inside one; -1 when unknown. */
    private static long totalMemory() {
        try {
            if (ManagementFactory.getOperatingSystemMXBean() instanceof com.sun.management.OperatingSystemMXBean os) {
                long total = os.getTotalMemorySize();
                return total > 0 ? total : -1;
            }
        } catch (RuntimeException | LinkageError unavailable) {
            return -1;
        }
        return -1;
    }
}
