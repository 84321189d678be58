package io.vmpage.migration;

import io.vmpage.engine.Vm;

/**
 * A post-copy migration whose connection was lost after the switch-over: QEMU's postcopy-paused state.
 * Nothing is discarded on either side. The destination's VM runs on the frames it has (a vCPU touching
 * one still on the source waits); the source stays paused and keeps its copy of every frame. A new
 * connection recovers it: {@link Migration#recover} in one process, {@link Destination#recover} and
 * the source's half over a new connection otherwise.
 */
public final class PostCopyPausedException extends MigrationException {
    private static final long serialVersionUID = 1L;

    /** The destination's half, null when this is the source's. */
    private final transient Destination.Paused destination;
    /** The source's half, null when this is the destination's. */
    private final transient PostCopyRecovery.Source source;
    /** In one process: when the destination resumed the VM (System.nanoTime), for the report's downtime. */
    private final long switchedAt;

    PostCopyPausedException(String message, Throwable cause, Destination.Paused destination) {
        this(message, cause, destination, null, 0);
    }

    PostCopyPausedException(String message, Throwable cause, PostCopyRecovery.Source source) {
        this(message, cause, null, source, 0);
    }

    PostCopyPausedException(String message, Throwable cause, Destination.Paused destination, PostCopyRecovery.Source source,
                            long switchedAt) {
        super(message, cause);
        this.destination = destination;
        this.source = source;
        this.switchedAt = switchedAt;
    }

    /** The destination's half (its VM, the frames it lacks), or null on the source. */
    public Destination.Paused destination() {
        return destination;
    }

    /** The VM running on the destination, or null on the source. */
    public Vm destinationVm() {
        return destination == null ? null : destination.vm();
    }

    /** The source's half, or null on the destination. */
    PostCopyRecovery.Source source() {
        return source;
    }

    long switchedAt() {
        return switchedAt;
    }
}
