package io.vmpage.mmu;

import java.util.Locale;

/**
 * The host cannot supply a native memory region of the size asked for: the anonymous mapping (or, where
 * mappings are not available, the allocation) behind a {@link NativeRegion} failed. The message names the
 * size and the operating system's reason, in one line, for example
 * {@code cannot map 2199090364416 bytes (2 TiB) of native memory: Cannot allocate memory (errno 12)}.
 *
 * <p>Thrown instead of whatever the native binding reports, so that callers (the engine creating a host, the
 * CLI loading an image) can tell "the host has no room for this" from a bug, and report it as the
 * resource the user asked for that cannot be had.
 */
public final class NativeMemoryException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final long size;
    private final int errno;
    private final String reason;

    /**
     * @param operation what failed, as a verb: {@code map} or {@code allocate}
     * @param size bytes asked for
     * @param errno the operating system's error number, 0 when there is none (a failed {@code malloc})
     * @param reason the operating system's description of the error (or the allocator's message)
     * @param cause what the native binding threw, or null
     */
    NativeMemoryException(String operation, long size, int errno, String reason, Throwable cause) {
        super("cannot " + operation + " " + describe(size) + " of native memory: "
            + (reason == null || reason.isBlank() ? "unknown error" : reason.strip())
            + (errno != 0 ? " (errno " + errno + ")" : ""), cause);
        this.size = size;
        this.errno = errno;
        this.reason = reason;
    }

    /** Bytes asked for. */
    public long size() {
        return size;
    }

    /** The operating system's error number ({@code ENOMEM} is 12), or 0 when the failure had none. */
    public int errno() {
        return errno;
    }

    /** The operating system's description of the failure, as it reported it. */
    public String reason() {
        return reason;
    }

    /** {@code "68719476736 bytes (64 GiB)"}: the exact size and, from 1 KiB, its binary approximation. */
    public static String describe(long bytes) {
        String[] units = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
        if (bytes < 1024) {
            return bytes + " bytes";
        }
        double v = bytes;
        int u = -1;
        while (v >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        String number = v == Math.rint(v) ? String.valueOf((long) v) : String.format(Locale.ROOT, "%.1f", v);
        return bytes + " bytes (" + number + " " + units[u] + ")";
    }
}
