package io.vmpage.migration;

import io.vmpage.engine.FrameFetcher;
import io.vmpage.mmu.MachineMemory;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.agrona.concurrent.IdleStrategy;
import org.HdrHistogram.ConcurrentHistogram;

/**
 * The destination's side of post-copy's demand paging (QEMU's postcopy-ram with userfaultfd): a vCPU,
 * or a host access, touching a frame that is not here yet asks the source for it over the return path
 * and waits until the stream delivers it; the first toucher asks, later ones wait for the same arrival.
 * Fault latencies (touch to arrival) go into an HdrHistogram.
 */
final class PostCopyFetcher implements FrameFetcher {
    private static final int PAGE = 4096;

    /** One frame asked for or delivered: the bytes, once they are in. */
    private static final class Arrival {
        final AtomicBoolean requested = new AtomicBoolean();
        /** Written once by the receiver thread, read by the waiting vCPU. */
        volatile byte[] bytes;
    }

    /** The connection requests go over; a post-copy recovery swaps in the new one. */
    private volatile Transport transport;
    /**
     * The migration is paused (QEMU's postcopy-paused): the connection is lost, a vCPU touching a frame
     * not here waits for a recovery instead of failing after the stall timeout.
     */
    private volatile boolean paused;
    private final long stallNanos;
    private final ConcurrentHashMap<Long, Arrival> arrivals = new ConcurrentHashMap<>();
    private final ConcurrentHistogram latencyMicros = new ConcurrentHistogram(TimeUnit.SECONDS.toMicros(60), 3);
    private final AtomicLong faults = new AtomicLong();

    /** The VM whose frames this fetches: a waiter gives up when it is destroyed. */
    private final io.vmpage.engine.Vm vm;

    PostCopyFetcher(io.vmpage.engine.Vm vm, Transport transport, long stallMillis) {
        this.vm = vm;
        this.transport = transport;
        this.stallNanos = TimeUnit.MILLISECONDS.toNanos(stallMillis);
    }

    @Override
    public void fetch(long gfn, int kind, long payload, MachineMemory memory, long frameAddress) {
        long start = System.nanoTime();
        faults.incrementAndGet();
        Arrival a = arrivals.computeIfAbsent(gfn, g -> new Arrival());
        long waitingSince = start;
        IdleStrategy idle = Waiting.backOff();
        while (a.bytes == null) {
            if (paused) {
                waitingSince = System.nanoTime();
            } else if (a.requested.compareAndSet(false, true) && a.bytes == null) {
                try {
                    transport.request(gfn);
                } catch (MigrationException lost) { // asked again on the connection a recovery brings
                    a.requested.set(false);
                }
            }
            if (vm.destroyed()) {
                throw new MigrationException("post-copy: the VM was destroyed while guest frame " + gfn + " was on its way");
            }
            if (System.nanoTime() - waitingSince > stallNanos) {
                throw new MigrationException("post-copy: guest frame " + gfn + " did not arrive within "
                    + TimeUnit.NANOSECONDS.toMillis(stallNanos) + " ms");
            }
            idle.idle();
        }
        memory.putBytes(frameAddress, a.bytes, 0, PAGE);
        arrivals.remove(gfn);
        latencyMicros.recordValue(Math.min(latencyMicros.getHighestTrackableValue(), (System.nanoTime() - start) / 1000));
    }

    /** The receiver has the bytes of a frame a vCPU claimed (or is about to claim): hand them over. */
    void deliver(long gfn, byte[] page) {
        arrivals.computeIfAbsent(gfn, g -> new Arrival()).bytes = page.clone();
    }

    /** The connection is lost: touches of frames not here wait for {@link #reconnect}. */
    void pause() {
        paused = true;
    }

    /** A post-copy recovery's new connection: every frame waited for is asked for again on it. */
    void reconnect(Transport fresh) {
        transport = fresh;
        for (java.util.Map.Entry<Long, Arrival> e : arrivals.entrySet()) {
            e.getValue().requested.set(false); // the waiting toucher asks again, on the new connection
        }
        paused = false;
    }

    long faults() {
        return faults.get();
    }

    /** Fault latency percentile in microseconds (0 without faults). */
    long latencyMicros(double percentile) {
        return latencyMicros.getTotalCount() == 0 ? 0 : latencyMicros.getValueAtPercentile(percentile);
    }

    long maxLatencyMicros() {
        return latencyMicros.getTotalCount() == 0 ? 0 : latencyMicros.getMaxValue();
    }
}
