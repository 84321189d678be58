package io.vmpage.migration;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.agrona.concurrent.IdleStrategy;
import org.jctools.queues.MpscArrayQueue;
import org.jctools.queues.SpscArrayQueue;

/**
 * A connection between two hosts in one JVM: a bounded JCTools queue of filled buffers from the
 * source thread to the destination thread, and one of empty buffers back, over a fixed pool of
 * direct buffers. A full queue holds the source back (the link's back-pressure); a side that waits
 * longer than the stall timeout fails the migration, as a dead TCP peer would.
 *
 * <p>Threads: one source thread ({@link #acquire}, {@link #send}, {@link #finish}, {@link #pollRequest})
 * and one destination thread ({@link #receive}, {@link #release}); {@link #request} from any destination
 * thread (the vCPUs faulting on frames not here yet), {@link #fail} from any thread.
 */
public final class MemoryTransport implements Transport {
    /** Default chunk: 256 KiB, 63 full pages with their record headers. */
    public static final int DEFAULT_CHUNK = 256 << 10;
    private static final ByteBuffer END = ByteBuffer.allocate(0);
    /**
     * Pool buffers of {@link #DEFAULT_CHUNK} that connections which ended cleanly gave back, for the next
     * connection's pool: a new direct buffer of 256 KiB cost 126 us here (its pages faulted in and zeroed),
     * and a 64 MiB stop-and-copy by reference takes 6 to 10 of them. Bounded; any thread.
     */
    private static final org.jctools.queues.MpmcArrayQueue<ByteBuffer> SPARE = new org.jctools.queues.MpmcArrayQueue<>(64);

    private final SpscArrayQueue<ByteBuffer> filled;
    private final SpscArrayQueue<ByteBuffer> empty;
    /** The return path: guest frames the destination's vCPUs wait for (several may ask at once). */
    private final MpscArrayQueue<Long> requests = new MpscArrayQueue<>(1 << 10); // one per waiting vCPU at most
    private final long stallNanos;
    private final int buffers;
    private final int chunkBytes;
    /** Multifd channels by index, made by whichever end asks first. */
    private final java.util.Map<Integer, MemoryTransport> channels = new java.util.concurrent.ConcurrentHashMap<>();
    /** Why the connection broke, null while it works. Written once by {@link #fail}, read by both sides. */
    private volatile String failure;
    /** The destination's one return-path message ({@link #reply}). */
    private final java.util.concurrent.CompletableFuture<long[]> replied = new java.util.concurrent.CompletableFuture<>();
    /** How the source thread waits for an empty buffer, and the destination thread for a filled one. */
    private final IdleStrategy sourceIdle = Waiting.backOff();
    private final IdleStrategy destinationIdle = Waiting.backOff();
    /**
     * The source VM whose memory the destination may copy pages out of ({@link #offerMemory}), null when
     * none; a channel asks its parent. Written by the source thread before its first chunk, read by the
     * destination after it took a chunk (volatile).
     */
    private volatile io.vmpage.engine.Vm offered;
    /**
     * The destination's page copy the source's thread may take pieces of ({@link #shareCopy}), null when
     * none. Written by the destination thread, read by the source thread (volatile).
     */
    private volatile SharedCopy shared;
    /** The connection this is a multifd channel of, null for the main one. */
    private final MemoryTransport parent;
    /** Pool buffers made so far (at most {@code buffers}). Source thread only. */
    private int allocated;
    /** The destination saw the end. Written by the destination thread (after its last release), read by {@link #close}. */
    private volatile boolean ended;
    /** The source finished (after its last acquire). Written by the source thread, read by {@link #close}. */
    private volatile boolean finished;
    /** Set by the {@link #close} that gives the pool back (once). */
    private final java.util.concurrent.atomic.AtomicBoolean recycled = new java.util.concurrent.atomic.AtomicBoolean();

    /** {@code buffers} chunks of {@code chunkBytes}, failing a side that waits more than {@code stallMillis}. */
    public MemoryTransport(int buffers, int chunkBytes, long stallMillis) {
        this(buffers, chunkBytes, stallMillis, null);
    }

    private MemoryTransport(int buffers, int chunkBytes, long stallMillis, MemoryTransport parent) {
        this.parent = parent;
        if (buffers < 2 || chunkBytes < 16 << 10) {
            throw new IllegalArgumentException("a memory transport needs at least 2 buffers of at least 16 KiB");
        }
        this.filled = new SpscArrayQueue<>(buffers + 1);
        this.empty = new SpscArrayQueue<>(buffers);
        this.stallNanos = TimeUnit.MILLISECONDS.toNanos(stallMillis);
        this.buffers = buffers;
        this.chunkBytes = chunkBytes;
    }

    /** 16 chunks of 256 KiB, 10 s stall timeout. */
    public MemoryTransport() {
        this(16, DEFAULT_CHUNK, 10_000);
    }

    @Override
    public ByteBuffer acquire() {
        check(); // a closed connection's buffers may be another's now
        ByteBuffer b = allocated < buffers ? empty.relaxedPoll() : null;
        if (b == null && allocated < buffers) { // the pool grows to its size as the stream needs it
            allocated++;
            b = chunkBytes == DEFAULT_CHUNK ? SPARE.relaxedPoll() : null;
            if (b == null) {
                b = ByteBuffer.allocateDirect(chunkBytes);
            }
        } else if (b == null) {
            b = await(empty, sourceIdle, "the destination stopped taking data");
        }
        b.clear();
        return b;
    }

    @Override
    public void send(ByteBuffer buffer) {
        check();
        filled.offer(buffer); // never full: at most every pooled buffer is in it, plus the end
    }

    @Override
    public void finish() {
        check();
        filled.offer(END);
        finished = true;
    }

    @Override
    public ByteBuffer receive() {
        if (ended) {
            return null;
        }
        ByteBuffer b = await(filled, destinationIdle, "the source stopped sending");
        if (b == END) {
            ended = true;
            return null;
        }
        return b;
    }

    @Override
    public void release(ByteBuffer buffer) {
        empty.offer(buffer);
    }

    @Override
    public void request(long gfn) {
        while (!requests.offer(gfn)) {
            check();
            Thread.onSpinWait();
        }
    }

    @Override
    public long pollRequest() {
        check();
        Long gfn = requests.relaxedPoll();
        return gfn == null ? -1 : gfn;
    }

    /** A queue pair like this one, shared by both ends; stall timeout and pool as this one's. */
    @Override
    public Transport channel(int index) {
        if (index < 1) {
            throw new IllegalArgumentException("multifd channels are numbered from 1: " + index);
        }
        check();
        return channels.computeIfAbsent(index, i -> new MemoryTransport(buffers, chunkBytes, TimeUnit.NANOSECONDS.toMillis(stallNanos), this));
    }

    /** Both ends share this process: the destination may copy pages out of {@code vm} itself. */
    @Override
    public boolean offerMemory(io.vmpage.engine.Vm vm) {
        if (parent != null) {
            return parent.offerMemory(vm);
        }
        offered = java.util.Objects.requireNonNull(vm, "vm");
        return true;
    }

    @Override
    public io.vmpage.engine.Vm offeredMemory() {
        return parent != null ? parent.offeredMemory() : offered;
    }

    /** The main connection's destination thread shares its copy; a channel's copies its own pages alone. */
    @Override
    public boolean shareCopy(SharedCopy copy) {
        if (parent != null) {
            return false;
        }
        shared = copy;
        return true;
    }

    @Override
    public SharedCopy sharedCopy() {
        return shared;
    }

    @Override
    public void reply(long[] words) {
        check();
        replied.complete(words.clone());
    }

    @Override
    public long[] awaitReply(long millis) {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(millis);
        IdleStrategy idle = Waiting.backOff();
        while (!replied.isDone()) {
            check();
            if (System.nanoTime() - deadline > 0) {
                fail("the destination did not reply within " + millis + " ms");
                check();
            }
            idle.idle();
        }
        return replied.join();
    }

    @Override
    public void fail(String why) {
        if (failure == null) {
            failure = why;
        }
        channels.values().forEach(c -> c.fail(why));
    }

    /**
     * Closes the connection and its channels. One that ended cleanly (the source finished, the destination
     * read the end, neither failed) gives its pool buffers to the next connection: every buffer is back in
     * the pool then, and neither end touches one again.
     */
    @Override
    public void close() {
        List<MemoryTransport> clean = new ArrayList<>();
        if (endedCleanly()) {
            clean.add(this);
        }
        channels.values().stream().filter(MemoryTransport::endedCleanly).forEach(clean::add);
        fail("connection closed");
        clean.forEach(MemoryTransport::recycle);
    }

    private boolean endedCleanly() {
        return failure == null && finished && ended;
    }

    /** Gives this connection's pool buffers to {@link #SPARE} (once; only after it {@link #endedCleanly}). */
    private void recycle() {
        if (recycled.compareAndSet(false, true)) {
            for (ByteBuffer b = empty.relaxedPoll(); b != null; b = empty.relaxedPoll()) {
                if (b.capacity() == DEFAULT_CHUNK && !SPARE.relaxedOffer(b)) {
                    break;
                }
            }
        }
    }

    private ByteBuffer await(SpscArrayQueue<ByteBuffer> queue, IdleStrategy idle, String stalled) {
        long deadline = System.nanoTime() + stallNanos;
        idle.reset();
        for (;;) {
            check();
            ByteBuffer b = queue.relaxedPoll();
            if (b != null) {
                return b;
            }
            if (System.nanoTime() - deadline > 0) {
                fail("stalled: " + stalled + " for " + TimeUnit.NANOSECONDS.toMillis(stallNanos) + " ms");
                check();
            }
            idle.idle();
        }
    }

    private void check() {
        String why = failure;
        if (why != null) {
            throw new MigrationException("migration connection lost: " + why);
        }
    }
}
