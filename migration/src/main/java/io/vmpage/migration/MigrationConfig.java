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
 * @param channels QEMU's multifd: pages go over this many parallel channels, each its own connection
 *     and thread, besides the main stream (1: everything on the main stream). As in QEMU, not with XBZRLE,
 *     and not for post-copy, whose pages go on the main stream (hybrid's pre-copy rounds use them)
 */
public record MigrationConfig(Mode mode, long bandwidthBytesPerSecond, long downtimeLimitNanos, int maxRounds,
                              Set<StopRule> stopRules, DirtyTracking tracking, boolean autoConverge, long xbzrleCacheBytes,
                              boolean verify, int channels, boolean pageReferences) {
    /** The most multifd channels a migration opens (QEMU allows 255; this host has 2 cores). */
    public static final int MAX_CHANNELS = 16;
    /** QEMU's {@code multifd-channels} default, when multifd is on. */
    public static final int MULTIFD_DEFAULT_CHANNELS = 2;

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
        if (channels < 1 || channels > MAX_CHANNELS) {
            throw new IllegalArgumentException("channels " + channels + ": 1 to " + MAX_CHANNELS);
        }
        if (channels > 1 && xbzrleCacheBytes != 0) {
            throw new IllegalArgumentException("multifd channels and XBZRLE do not go together (QEMU refuses them too)");
        }
        if (channels > 1 && mode == Mode.POSTCOPY) {
            throw new IllegalArgumentException("post-copy sends every page on the main stream: multifd channels are for pre-copy"
                + " (use hybrid)");
        }
        stopRules = Set.copyOf(stopRules);
    }

    /** Pre-copy, unlimited bandwidth, 300 ms downtime limit, QEMU's rule plus Xen's 30-round cap, write protection. */
    public static MigrationConfig defaults() {
        return new MigrationConfig(Mode.PRECOPY, 0, 300_000_000L, 30,
            EnumSet.of(StopRule.QEMU_DOWNTIME, StopRule.XEN_MAX_ROUNDS), DirtyTracking.WRITE_PROTECT, false, 0, true, 1, true);
    }

    public MigrationConfig withMode(Mode m) {
        return new MigrationConfig(m, bandwidthBytesPerSecond, downtimeLimitNanos, maxRounds, stopRules, tracking, autoConverge, xbzrleCacheBytes, verify, channels, pageReferences);
    }

    public MigrationConfig withBandwidth(long bytesPerSecond) {
        return new MigrationConfig(mode, bytesPerSecond, downtimeLimitNanos, maxRounds, stopRules, tracking, autoConverge, xbzrleCacheBytes, verify, channels, pageReferences);
    }

    public MigrationConfig withDowntimeLimit(long nanos) {
        return new MigrationConfig(mode, bandwidthBytesPerSecond, nanos, maxRounds, stopRules, tracking, autoConverge, xbzrleCacheBytes, verify, channels, pageReferences);
    }

    public MigrationConfig withMaxRounds(int rounds) {
        return new MigrationConfig(mode, bandwidthBytesPerSecond, downtimeLimitNanos, rounds, stopRules, tracking, autoConverge, xbzrleCacheBytes, verify, channels, pageReferences);
    }

    public MigrationConfig withStopRules(Set<StopRule> rules) {
        return new MigrationConfig(mode, bandwidthBytesPerSecond, downtimeLimitNanos, maxRounds, rules, tracking, autoConverge, xbzrleCacheBytes, verify, channels, pageReferences);
    }

    public MigrationConfig withTracking(DirtyTracking method) {
        return new MigrationConfig(mode, bandwidthBytesPerSecond, downtimeLimitNanos, maxRounds, stopRules, method, autoConverge, xbzrleCacheBytes, verify, channels, pageReferences);
    }

    public MigrationConfig withAutoConverge(boolean on) {
        return new MigrationConfig(mode, bandwidthBytesPerSecond, downtimeLimitNanos, maxRounds, stopRules, tracking, on, xbzrleCacheBytes, verify, channels, pageReferences);
    }

    /** XBZRLE with a cache of {@code cacheBytes} (0: off). */
    public MigrationConfig withXbzrle(long cacheBytes) {
        return new MigrationConfig(mode, bandwidthBytesPerSecond, downtimeLimitNanos, maxRounds, stopRules, tracking, autoConverge, cacheBytes, verify, channels, pageReferences);
    }

    /** Whether an in-process migration compares every page before the switch-over. */
    public MigrationConfig withVerify(boolean on) {
        return new MigrationConfig(mode, bandwidthBytesPerSecond, downtimeLimitNanos, maxRounds, stopRules, tracking, autoConverge,
            xbzrleCacheBytes, on, channels, pageReferences);
    }

    /** Whether pages may travel as references over a transport that offers the source's memory (see above). */
    public MigrationConfig withPageReferences(boolean on) {
        return new MigrationConfig(mode, bandwidthBytesPerSecond, downtimeLimitNanos, maxRounds, stopRules, tracking, autoConverge,
            xbzrleCacheBytes, verify, channels, on);
    }

    /** {@code n} multifd channels (1: none, the main stream carries every page). */
    public MigrationConfig withChannels(int n) {
        return new MigrationConfig(mode, bandwidthBytesPerSecond, downtimeLimitNanos, maxRounds, stopRules, tracking, autoConverge,
            xbzrleCacheBytes, verify, n, pageReferences);
    }
}
