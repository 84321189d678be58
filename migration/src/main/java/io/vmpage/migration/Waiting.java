package io.vmpage.migration;

import org.agrona.concurrent.BackoffIdleStrategy;
import org.agrona.concurrent.IdleStrategy;

/**
 * How the migration's threads wait for one another (a chunk, a free buffer, a channel's batch, a
 * post-copy frame): Agrona's back-off, spinning first, then yielding, then parking.
 *
 * <p>The yield phase matters here. On Linux a {@code parkNanos} of a microsecond sleeps for the
 * timer slack, about 50 us, while a 256 KiB chunk of pages takes a thread about 30 us to fill or
 * drain: a waiter that went straight from spinning to parking missed most chunks by a whole sleep, and
 * a 64 MiB stop-and-copy took three times what it takes with this. Yielding keeps the waiter ready
 * without taking a core from a thread that has work (2 cores are shared with the guest's writers).
 */
final class Waiting {
    private static final long SPINS = 256;
    private static final long YIELDS = 4096;
    private static final long PARK_NANOS = 50_000;

    private Waiting() {
    }

    /** A fresh back-off for one waiting thread (not thread-safe; {@code reset()} it before each wait). */
    static IdleStrategy backOff() {
        return new BackoffIdleStrategy(SPINS, YIELDS, PARK_NANOS, PARK_NANOS);
    }
}
