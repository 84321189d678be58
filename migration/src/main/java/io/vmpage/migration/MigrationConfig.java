package io.vmpage.migration;

import io.vmpage.engine.dirty.DirtyTracking;
import java.util.EnumSet;
import java.util.Set;

/**
 * How a migration runs. Immutable; {@code with*} returns a copy.
 *
 * @param mode pre-copy, stop-and-copy, post-copy or hybrid
 * @param bandwidthBytesPerSecond page payload per second on the link, 0 for unlimited
 * @param downtimeLimitNanos QEMU's downtime limit (default 300 ms)
 * @param maxRounds Xen's round cap (used when {@link StopRule#XEN_MAX_ROUNDS} is on; default 30)
 * @param stopRules which stop rules end pre-copy; the first that holds wins
 * @param tracking the dirty-log method
 * @param autoConverge QEMU's auto-converge: throttle the vCPUs when the guest dirties more than half of
 *     what was sent in two rounds, 20% first, 10% more each time, up to 99%
 * @param xbzrleCacheBytes QEMU's XBZRLE: pages re-sent after round 0 go as deltas against a cache of
 *     this many bytes of what was sent before (QEMU's default {@link #XBZRLE_DEFAULT_CACHE}); 0 = off
 * @param verify an in-process migration compares the destination with the paused source page by page
 *     before the switch-over (outside the downtime); off, the report says it was not verified (a
 *     benchmark of the copy itself turns it off)
 */
public record MigrationConfig(Mode mode, long bandwidthBytesPerSecond, long downtimeLimitNanos, int maxRounds,
                              Set<StopRule> stopRules, DirtyTracking tracking, boolean autoConverge, long xbzrleCacheBytes,
                              boolean verify) {
    /** QEMU's {@code xbzrle-cache-size} default: 64 MiB. */
    public static final long XBZRLE_DEFAULT_CACHE = 64L << 20;

    /**
     * The algorithm. {@code HYBRID}: pre-copy rounds until a stop rule holds, then post-copy for what
     * the guest dirtied since it was sent (QEMU's {@code migrate_start_postcopy} after some pre-copy).
     */
    public enum Mode { PRECOPY, STOPCOPY, POSTCOPY, HYBRID }

    /** Pre-copy stop rules (selectable and combinable). */
    public enum StopRule {
        /** QEMU: remaining dirty bytes / measured bandwidth below the downtime limit. */
        QEMU_DOWNTIME,
        /** Xen: at most {@code maxRounds} rounds. */
        XEN_MAX_ROUNDS,
        /** Xen: fewer than 50 pages dirtied in a round. */
        XEN_FEW_DIRTY,
        /** Xen: more than 3x memory sent. */
        XEN_SENT_3X
    }

    public MigrationConfig {
        if (mode == null || tracking == null || stopRules == null) {
            throw new IllegalArgumentException("mode, stop rules and tracking method are required");
        }
        if (bandwidthBytesPerSecond < 0) {
            throw new IllegalArgumentException("bandwidth " + bandwidthBytesPerSecond + " bytes/s must not be negative");
        }
        if (downtimeLimitNanos <= 0) {
            throw new IllegalArgumentException("downtime limit must be positive");
        }
        if (maxRounds < 1) {
            throw new IllegalArgumentException("max rounds " + maxRounds + " must be at least 1");
        }
        if ((mode == Mode.PRECOPY || mode == Mode.HYBRID) && stopRules.isEmpty()) {
            throw new IllegalArgumentException(mode + " needs at least one stop rule to end its pre-copy");
        }
        if (xbzrleCacheBytes != 0 && (xbzrleCacheBytes < 4096 || xbzrleCacheBytes > 1L << 30)) {
            throw new IllegalArgumentException("XBZRLE cache of " + xbzrleCacheBytes + " bytes: 4 KiB to 1 GiB, or 0 for off");
        }
        stopRules = Set.copyOf(stopRules);
    }

    /** Pre-copy, unlimited bandwidth, 300 ms downtime limit, QEMU's rule plus Xen's 30-round cap, write protection. */
    public static MigrationConfig defaults() {
        return new MigrationConfig(Mode.PRECOPY, 0, 300_000_000L, 30,
            EnumSet.of(StopRule.QEMU_DOWNTIME, StopRule.XEN_MAX_ROUNDS), DirtyTracking.WRITE_PROTECT, false, 0, true);
    }

    public MigrationConfig withMode(Mode m) {
        return new MigrationConfig(m, bandwidthBytesPerSecond, downtimeLimitNanos, maxRounds, stopRules, tracking, autoConverge, xbzrleCacheBytes, verify);
    }

    public MigrationConfig withBandwidth(long bytesPerSecond) {
        return new MigrationConfig(mode, bytesPerSecond, downtimeLimitNanos, maxRounds, stopRules, tracking, autoConverge, xbzrleCacheBytes, verify);
    }

    public MigrationConfig withDowntimeLimit(long nanos) {
        return new MigrationConfig(mode, bandwidthBytesPerSecond, nanos, maxRounds, stopRules, tracking, autoConverge, xbzrleCacheBytes, verify);
    }

    public MigrationConfig withMaxRounds(int rounds) {
        return new MigrationConfig(mode, bandwidthBytesPerSecond, downtimeLimitNanos, rounds, stopRules, tracking, autoConverge, xbzrleCacheBytes, verify);
    }

    public MigrationConfig withStopRules(Set<StopRule> rules) {
        return new MigrationConfig(mode, bandwidthBytesPerSecond, downtimeLimitNanos, maxRounds, rules, tracking, autoConverge, xbzrleCacheBytes, verify);
    }

    public MigrationConfig withTracking(DirtyTracking method) {
        return new MigrationConfig(mode, bandwidthBytesPerSecond, downtimeLimitNanos, maxRounds, stopRules, method, autoConverge, xbzrleCacheBytes, verify);
    }

    public MigrationConfig withAutoConverge(boolean on) {
        return new MigrationConfig(mode, bandwidthBytesPerSecond, downtimeLimitNanos, maxRounds, stopRules, tracking, on, xbzrleCacheBytes, verify);
    }

    /** XBZRLE with a cache of {@code cacheBytes} (0: off). */
    public MigrationConfig withXbzrle(long cacheBytes) {
        return new MigrationConfig(mode, bandwidthBytesPerSecond, downtimeLimitNanos, maxRounds, stopRules, tracking, autoConverge, cacheBytes, verify);
    }

    /** Whether an in-process migration compares every page before the switch-over. */
    public MigrationConfig withVerify(boolean on) {
        return new MigrationConfig(mode, bandwidthBytesPerSecond, downtimeLimitNanos, maxRounds, stopRules, tracking, autoConverge,
            xbzrleCacheBytes, on);
    }
}
