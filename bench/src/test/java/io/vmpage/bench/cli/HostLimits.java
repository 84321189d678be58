package io.vmpage.bench.cli;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** What this host's kernel will map: for tests of the "host cannot supply the memory" path. */
final class HostLimits {
    private HostLimits() {
    }

    /**
     * True when an anonymous mapping of {@code bytes} is certain to be refused here: Linux with heuristic
     * (0) or strict (2) overcommit, and more than RAM plus swap (heuristic overcommit refuses exactly that).
     */
    static boolean refusesMapping(long bytes) {
        try {
            String mode = Files.readString(Path.of("/proc/sys/vm/overcommit_memory")).strip();
            if (mode.equals("1")) {
                return false;
            }
            long total = 0;
            for (String line : Files.readAllLines(Path.of("/proc/meminfo"))) {
                if (line.startsWith("MemTotal:") || line.startsWith("SwapTotal:")) {
                    total += Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
                }
            }
            return total > 0 && total < bytes;
        } catch (IOException | RuntimeException notLinux) {
            return false;
        }
    }
}
