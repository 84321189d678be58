package io.vmpage.migration;

import java.util.List;

/**
 * What a migration did, in QEMU's units: pages are 4 KiB, a dirty rate is bytes of distinct pages first
 * written per second, bandwidth is page payload bytes per second, downtime runs from the source's pause
 * to the destination's resume (not counting the page-by-page verification, which runs in between).
 */
public record MigrationReport(MigrationConfig.Mode mode, String paging, long memoryBytes, int rounds, StopReason stopReason,
                              long pagesSent, long zeroPages, long bytesSent, long setupNanos, long totalNanos,
                              long downtimeNanos, double dirtyRateBytesPerSecond, double bandwidthBytesPerSecond,
                              List<Round> perRound, boolean verified, long mismatchedPages, int throttlePercent,
                              PostCopy postCopy, Xbzrle xbzrle) {
    /**
     * What post-copy's demand paging did on the destination: frames a touch asked the source for, and the
     * latency from touch to arrival (HdrHistogram percentiles, microseconds); null for the other modes.
     */
    public record PostCopy(long faults, long p50Micros, long p99Micros, long maxMicros, long pagesPushed) {
    }

    /**
     * What XBZRLE did (QEMU's {@code info migrate} xbzrle lines): its cache size, the pages sent as deltas
     * and the delta bytes, re-sent pages not in the cache (sent whole), deltas that would not have been
     * smaller than the page (sent whole), and dirtied pages found unchanged (not sent); null when off.
     */
    public record Xbzrle(long cacheBytes, long pages, long bytes, long cacheMisses, long overflows, long unchanged) {
        /** Page bytes the deltas stood for, over the bytes they took (QEMU's encoding rate). */
        public double encodingRate() {
            return bytes == 0 ? 0 : pages * 4096.0 / bytes;
        }
    }

    /**
     * One round: pages sent, pages the guest dirtied while it ran (the harvest after it; for the
     * stop-and-copy, the writes the last harvest found), its time, and what the source measured then:
     * the dirty rate, the bandwidth and the downtime the pages left would take (QEMU's {@code info migrate});
     * {@code sourcePaused} for the round sent with the source paused (stop-and-copy, or post-copy's push).
     */
    public record Round(int round, long pagesSent, long pagesDirtied, long nanos, double dirtyRateBytesPerSecond,
                        double bandwidthBytesPerSecond, long expectedDowntimeNanos, boolean sourcePaused) {
    }

    public MigrationReport {
        perRound = List.copyOf(perRound);
    }
}
