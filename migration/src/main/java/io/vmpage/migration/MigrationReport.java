package io.vmpage.migration;

import java.util.List;

/**
 * What a migration did, in QEMU's units: pages are 4 KiB, a dirty rate is bytes of distinct pages first
 * written per second, bandwidth is page payload bytes per second, downtime runs from the source's pause
 * to the destination's resume.
 */
public record MigrationReport(MigrationConfig.Mode mode, String paging, long memoryBytes, int rounds, StopReason stopReason,
                              long pagesSent, long zeroPages, long bytesSent, long setupNanos, long totalNanos,
                              long downtimeNanos, double dirtyRateBytesPerSecond, double bandwidthBytesPerSecond,
                              List<Round> perRound, boolean verified, long mismatchedPages) {
    /** One round: pages sent, pages the guest dirtied while it ran (found by the harvest after it), its time. */
    public record Round(int round, long pagesSent, long pagesDirtied, long nanos) {
    }

    public MigrationReport {
        perRound = List.copyOf(perRound);
    }
}
