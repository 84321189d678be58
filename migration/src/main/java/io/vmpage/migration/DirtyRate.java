package io.vmpage.migration;

import io.vmpage.engine.Vm;
import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.dirty.DirtySnapshot;
import io.vmpage.engine.dirty.DirtyTracking;
import java.util.concurrent.locks.LockSupport;

/**
 * A guest's dirty rate measured before a migration starts, as QEMU's {@code calc-dirty-rate} does in
 * its dirty-log mode: switch the log on, let the guest run for a period, count the distinct pages it
 * dirtied, switch the log off. The unit is QEMU's: bytes of distinct pages first written per second.
 *
 * @param pages distinct pages dirtied in the period
 * @param nanos the period
 */
public record DirtyRate(long pages, long nanos) {
    /** Measures {@code vm}'s dirty rate over {@code periodNanos} with dirty-log method {@code how}. */
    public static DirtyRate measure(Vm vm, DirtyTracking how, long periodNanos) {
        DirtyLog log = vm.dirtyLog();
        DirtySnapshot dirty = new DirtySnapshot(vm.physicalMap().frames());
        log.enable(how);
        long start = System.nanoTime();
        try {
            for (long left = periodNanos; left > 0; left = start + periodNanos - System.nanoTime()) {
                LockSupport.parkNanos(left);
            }
            long pages = log.harvest(dirty);
            return new DirtyRate(pages, System.nanoTime() - start);
        } finally {
            log.disable();
            log.harvest(dirty); // leave nothing logged behind for the migration's own log
        }
    }

    /** Bytes of distinct pages dirtied per second. */
    public double bytesPerSecond() {
        return pages * 4096.0 * 1e9 / Math.max(1, nanos);
    }

    /**
     * Whether pre-copy should converge: the pages dirtied in one downtime limit's worth of time (the
     * measured period, scaled) can be sent within that limit at {@code bandwidth} (QEMU's stop rule
     * applied to the measured rate). A hot set smaller than bandwidth x limit converges whatever its
     * write rate, since it bounds what can be dirty; unlimited bandwidth (0) always converges.
     */
    public boolean predictsConvergence(long bandwidthBytesPerSecond, long downtimeLimitNanos) {
        if (bandwidthBytesPerSecond == 0) {
            return true;
        }
        double window = Math.min(1.0, (double) downtimeLimitNanos / Math.max(1, nanos));
        double dirtyInWindow = pages * 4096.0 * window;
        return dirtyInWindow < bandwidthBytesPerSecond * (downtimeLimitNanos / 1e9);
    }
}
