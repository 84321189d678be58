package io.vmpage.migration;

import io.vmpage.engine.Vm;
import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;
import java.util.concurrent.BrokenBarrierException;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.zip.CRC32C;
import org.agrona.concurrent.IdleStrategy;
import org.jctools.queues.SpscArrayQueue;

/**
 * QEMU's multifd: pages travel over several channels, each its own connection ({@link Transport#channel})
 * with a thread at each end, while the main stream carries the rest ({@link StreamFormat}). The source's
 * migration thread hands pages to the channels in batches of {@link #BATCH} (QEMU's multifd packet,
 * 128 pages), round-robin to the next channel with room; each channel thread copies its pages from guest
 * memory into its own stream. At the start of every round after the first, every channel gets a SYNC
 * (QEMU's {@code multifd_send_sync_main}): a page dirtied again may be re-sent on another channel, so
 * no destination channel applies a page of the new round before every channel has applied all of the
 * old (a barrier over the channel threads). Before the main stream goes on past its rounds (the vCPU
 * state, post-copy) every channel ends: its END record carries its page count and CRC32C, and the
 * destination's main thread waits for all of them first.
 */
final class Multifd {
    /** Pages per batch handed to one channel (QEMU's multifd packet holds 128 pages). */
    static final int BATCH = 128;
    /** Batches in flight per channel. */
    private static final int DEPTH = 4;
    private static final int PAGE = StreamFormat.PAGE_BYTES;
    /** A batch's first word: what it is; the second: how many pages, or the round of a SYNC. */
    private static final long PAGES = 0;
    private static final long SYNC = 1;
    private static final long END = 2;

    private Multifd() {
    }

    /** Spins, then parks, until {@code queue} has an element; {@code failed} is checked in between. */
    private static long[] take(SpscArrayQueue<long[]> queue, Runnable failed) {
        IdleStrategy idle = Waiting.backOff();
        for (;;) {
            long[] b = queue.relaxedPoll();
            if (b != null) {
                return b;
            }
            failed.run();
            idle.idle();
        }
    }

    /**
     * The source side. The migration thread calls {@link #page}, {@link #sync}, {@link #end} and
     * {@link #abort}; each channel has its own thread.
     */
    static final class Sender {
        /** How often the main stream says it is alive while the channels carry the pages. */
        private static final long KEEP_ALIVE_NANOS = 1_000_000_000L;
        private final Channel[] channels;
        private final StreamWriter mainOut;
        private long keptAliveAt = System.nanoTime();
        private final long[] pending = new long[BATCH];
        private int filled;
        private int next;
        private long dispatched;
        /** The first channel failure; channel threads write it, the migration thread reads it. */
        private final AtomicReference<Throwable> failure = new AtomicReference<>();

        /**
         * Opens {@code count} channels of {@code main} for {@code vm}'s pages, announcing them in the main
         * stream first (the MULTIFD record, sent at once so the destination takes the channels).
         */
        Sender(Vm vm, Transport main, StreamWriter mainOut, int count, Migration.Pacer pacer) {
            long session = java.util.concurrent.ThreadLocalRandom.current().nextLong();
            this.mainOut = mainOut;
            mainOut.multifd(count, session);
            mainOut.flush();
            channels = new Channel[count];
            try {
                for (int i = 0; i < count; i++) {
                    channels[i] = new Channel(i + 1, main.channel(i + 1), session, vm, pacer, failure);
                }
            } catch (UnsupportedOperationException e) {
                abort("opening multifd channels failed: " + e.getMessage());
                throw new MigrationException("cannot migrate over " + count + " channels: " + e.getMessage(), e);
            } catch (RuntimeException e) {
                abort("opening multifd channels failed: " + e.getMessage());
                throw e;
            }
            for (Channel c : channels) {
                c.start();
            }
        }

        /** Sends guest frame {@code gfn} on some channel. */
        void page(long gfn) {
            pending[filled++] = gfn;
            dispatched++;
            if (filled == BATCH) {
                dispatch();
            }
        }

        /** Round {@code round} starts: the pages handed out so far go first, then a SYNC on every channel. */
        void sync(int round) {
            dispatch();
            for (Channel c : channels) {
                long[] b = c.free();
                b[0] = SYNC;
                b[1] = round;
                c.work.offer(b);
            }
        }

        /**
         * Hands out the pages still pending and waits until every channel has sent every page handed to
         * it: the round is over when its pages are on the link, as QEMU's {@code multifd_send_sync_main}
         * waits for its channels.
         */
        void drain() {
            dispatch();
            for (Channel c : channels) {
                IdleStrategy idle = Waiting.backOff();
                while (c.done.get() != c.issued) {
                    check();
                    keepAlive();
                    idle.idle();
                }
            }
        }

        /** Ends every channel (their END records) and waits for their threads; throws a channel's failure. */
        void end() {
            dispatch();
            for (Channel c : channels) {
                long[] b = c.free();
                b[0] = END;
                c.work.offer(b);
            }
            for (Channel c : channels) {
                c.task.join("the multifd channels");
            }
            check();
        }

        /** Fails every channel's connection and waits for their threads (the migration failed). */
        void abort(String why) {
            for (Channel c : channels) {
                if (c != null) {
                    c.aborted = true;
                    c.transport.fail(why);
                }
            }
            for (Channel c : channels) {
                if (c != null && c.task != null) {
                    c.task.join("the multifd channels");
                }
            }
        }

        /** Pages handed to the channels so far (the migration thread's count). */
        long dispatched() {
            return dispatched;
        }

        /** Page records the channels wrote, as of their last batch. */
        long pages() {
            long n = 0;
            for (Channel c : channels) {
                n += c.pages.get();
            }
            return n;
        }

        long zeroPages() {
            long n = 0;
            for (Channel c : channels) {
                n += c.zeroPages.get();
            }
            return n;
        }

        /** Stream bytes the channels handed to their connections, as of their last batch. */
        long bytes() {
            long n = 0;
            for (Channel c : channels) {
                n += c.bytes.get();
            }
            return n;
        }

        private void dispatch() {
            check();
            if (filled == 0) {
                return;
            }
            long[] b = null;
            Channel to = null;
            IdleStrategy idle = Waiting.backOff();
            while (b == null) { // the next channel with room (QEMU takes the next idle one)
                for (int i = 0; i < channels.length && b == null; i++) {
                    to = channels[(next + i) % channels.length];
                    b = to.freeBatches.relaxedPoll();
                    if (b != null) {
                        next = (next + i + 1) % channels.length;
                    }
                }
                if (b == null) {
                    check();
                    keepAlive();
                    idle.idle();
                }
            }
            b[0] = PAGES;
            b[1] = filled;
            System.arraycopy(pending, 0, b, 2, filled);
            to.issued++;
            to.work.offer(b);
            filled = 0;
            keepAlive();
        }

        /** Sends the main stream's chunk (rounds so far, or nothing) once a second. */
        private void keepAlive() {
            long now = System.nanoTime();
            if (now - keptAliveAt >= KEEP_ALIVE_NANOS) {
                keptAliveAt = now;
                mainOut.keepAlive();
            }
        }

        private void check() {
            Throwable t = failure.get();
            if (t != null) {
                throw t instanceof MigrationException m ? new MigrationException(m.getMessage(), m)
                    : new MigrationException("a multifd channel failed: " + t, t);
            }
        }

        /** One channel: its connection, its thread, and the batches going to it and coming back. */
        private final class Channel {
            final Transport transport;
            private final Runnable body;
            private final String name;
            /** The channel's thread once {@link #start}ed (migration thread only), else null. */
            MigrationThreads.Task task;
            final SpscArrayQueue<long[]> work = new SpscArrayQueue<>(DEPTH);
            final SpscArrayQueue<long[]> freeBatches = new SpscArrayQueue<>(DEPTH);
            /** Published by the channel thread after each batch (lazySet), read by the migration thread. */
            final AtomicLong pages = new AtomicLong();
            final AtomicLong zeroPages = new AtomicLong();
            final AtomicLong bytes = new AtomicLong();
            /** Set by {@link #abort}: the channel thread stops waiting for work. */
            volatile boolean aborted;
            /** Page batches handed to this channel (migration thread only), and sent by it (published after each). */
            long issued;
            final AtomicLong done = new AtomicLong();

            Channel(int index, Transport transport, long session, Vm vm, Migration.Pacer pacer, AtomicReference<Throwable> failure) {
                this.transport = transport;
                for (int i = 0; i < DEPTH; i++) {
                    freeBatches.offer(new long[2 + BATCH]);
                }
                this.body = () -> run(index, session, vm, pacer, failure);
                this.name = "multifd-send-" + index + "-vm" + vm.id();
            }

            void start() {
                task = MigrationThreads.start(name, body);
            }

            /** A free batch of this channel, waiting while all are in flight. */
            long[] free() {
                return take(freeBatches, () -> {
                    check();
                    keepAlive();
                });
            }

            private void run(int index, long session, Vm vm, Migration.Pacer pacer, AtomicReference<Throwable> failure) {
                try {
                    StreamWriter out = new StreamWriter(transport);
                    out.references(vm); // by reference when the main connection offers the VM's memory
                    out.channel(index, session);
                    while (true) {
                        long[] b = take(work, () -> {
                            if (aborted) {
                                throw new MigrationException("multifd channel " + index + " aborted");
                            }
                        });
                        if (b[0] == END) {
                            out.end();
                            publish(out);
                            return;
                        }
                        if (b[0] == SYNC) {
                            out.sync((int) b[1]);
                        } else {
                            long payload = 0;
                            if (out.byReference(vm)) {
                                payload = (long) PAGE * out.references(vm, b, 2, (int) b[1]);
                            } else {
                                for (int i = 0; i < b[1]; i++) {
                                    payload += out.page(vm, b[2 + i]) ? 0 : PAGE;
                                }
                            }
                            pacer.sentShared(payload); // once a batch: the channels share the link and its lock
                        }
                        publish(out);
                        if (b[0] == PAGES) {
                            done.lazySet(done.get() + 1);
                        }
                        freeBatches.offer(b);
                    }
                } catch (Throwable t) {
                    failure.compareAndSet(null, t);
                    transport.fail("multifd channel " + index + " failed: " + t.getMessage());
                }
            }

            private void publish(StreamWriter out) {
                pages.lazySet(out.pages());
                zeroPages.lazySet(out.zeroPages());
                bytes.lazySet(out.bytes());
            }
        }
    }

    /**
     * The destination side: one thread per channel applies its pages to the VM; the main stream's thread
     * waits for them all with {@link #awaitEnd}, or stops them with {@link #abort}.
     */
    static final class Receiver {
        private final Transport main;
        private final MigrationThreads.Task[] threads;
        private final Transport[] transports;
        private final CyclicBarrier roundSync;
        private final AtomicIntegerArray seen;
        private final AtomicLong pages = new AtomicLong();
        private final AtomicLong zeroPages = new AtomicLong();
        private final AtomicReference<Throwable> failure = new AtomicReference<>();
        private final long stallMillis;

        /** Takes {@code count} channels of {@code main} for {@code vm} (of {@code session}) and starts their threads. */
        Receiver(Vm vm, Transport main, int count, long session, long stallMillis) {
            this.main = main;
            this.stallMillis = stallMillis;
            this.threads = new MigrationThreads.Task[count];
            this.transports = new Transport[count];
            this.roundSync = new CyclicBarrier(count);
            this.seen = new AtomicIntegerArray(count + 1);
            for (int i = 0; i < count; i++) {
                transports[i] = main.channel(i + 1); // a TCP destination: the next connection, whichever channel it is
            }
            for (int i = 0; i < count; i++) {
                Transport t = transports[i];
                threads[i] = MigrationThreads.start("multifd-receive-" + (i + 1) + "-vm" + vm.id(), () -> run(t, vm, count, session));
            }
        }

        /** Waits for every channel's END; throws the first channel's failure. */
        void awaitEnd() {
            for (MigrationThreads.Task t : threads) {
                t.join("the multifd channels");
            }
            Throwable t = failure.get();
            if (t != null) {
                throw t instanceof MigrationException m ? new MigrationException(m.getMessage(), m)
                    : new MigrationException("stream rejected: a multifd channel failed: " + t, t);
            }
        }

        /** Stops every channel thread (the migration failed) and waits for them: no page lands after this. */
        void abort(String why) {
            for (Transport t : transports) {
                t.fail(why);
            }
            roundSync.reset();
            for (MigrationThreads.Task t : threads) {
                try {
                    t.join("the multifd channels");
                } catch (MigrationException interrupted) { // the flag is set again
                    return;
                }
            }
        }

        long pages() {
            return pages.get();
        }

        long zeroPages() {
            return zeroPages.get();
        }

        private void run(Transport t, Vm vm, int count, long session) {
            try {
                receive(t, vm, count, session);
            } catch (BufferUnderflowException e) {
                failed(new MigrationException("stream is corrupted or truncated: a multifd channel's record is cut short", e));
            } catch (Throwable e) {
                failed(e);
            }
        }

        private void failed(Throwable e) {
            failure.compareAndSet(null, e);
            main.fail("the destination rejected a multifd channel: " + e.getMessage()); // fails every channel too
            roundSync.reset();
        }

        private void receive(Transport t, Vm vm, int count, long session) throws InterruptedException {
            ByteBuffer chunk = next(t, "a multifd channel's first record");
            if (chunk.remaining() < 17 || chunk.get() != StreamFormat.CHANNEL || chunk.getInt() != StreamFormat.MAGIC
                || chunk.getShort() != StreamFormat.VERSION) {
                throw new MigrationException("a multifd channel does not start with its CHANNEL record");
            }
            int index = chunk.getShort();
            if (index < 1 || index > count || !seen.compareAndSet(index, 0, 1)) {
                throw new MigrationException("multifd channel " + index + " of " + count + " is not one this migration opened,"
                    + " or came twice");
            }
            if (chunk.getLong() != session) {
                throw new MigrationException("multifd channel " + index + " belongs to another migration (session mismatch)");
            }
            CRC32C crc = new CRC32C();
            byte[] page = new byte[PAGE];
            PageReferences references = new PageReferences(vm, t);
            long frames = vm.physicalMap().frames();
            long received = 0;
            long zero = 0;
            int synced = 0;
            while (true) {
                if (!chunk.hasRemaining()) {
                    crc.update(chunk.flip());
                    t.release(chunk);
                    chunk = next(t, "multifd channel " + index + "'s END record");
                    continue;
                }
                int at = chunk.position();
                byte type = chunk.get();
                if (type == StreamFormat.PAGE) {
                    byte flags = chunk.get();
                    long gfn = chunk.getLong();
                    if (gfn < 0 || gfn >= frames) {
                        throw new MigrationException("stream is corrupted: multifd channel " + index + " sends guest frame " + gfn
                            + ", outside the VM's " + frames + " frames");
                    }
                    if (flags != StreamFormat.PAGE_FULL && flags != StreamFormat.PAGE_ZERO && flags != StreamFormat.PAGE_REFERENCE) {
                        throw new MigrationException("stream is corrupted: multifd page " + gfn + " has flags " + flags
                            + " (channels carry whole, zero and by-reference pages only)");
                    }
                    if (Destination.storePage(vm, chunk, flags, gfn, page, references)) {
                        zero++;
                    }
                    received++;
                } else if (type == StreamFormat.SYNC) {
                    references.flush(); // this channel's pages of the rounds before are in before it syncs
                    int round = chunk.getInt();
                    if (round <= synced) {
                        throw new MigrationException("stream is corrupted: multifd channel " + index + " syncs round " + round
                            + " after round " + synced);
                    }
                    synced = round;
                    try {
                        roundSync.await(stallMillis, TimeUnit.MILLISECONDS); // every channel has the rounds before
                    } catch (BrokenBarrierException e) {
                        throw new MigrationException("multifd channel " + index + " stopped: another channel failed", e);
                    } catch (TimeoutException e) {
                        throw new MigrationException("stalled: multifd channels did not all reach round " + round + " within "
                            + stallMillis + " ms", e);
                    }
                } else if (type == StreamFormat.END) {
                    references.flush();
                    long sent = Destination.endRecord(chunk, at, crc, "multifd channel " + index);
                    if (sent != received) {
                        throw new MigrationException("multifd channel " + index + " ended after " + received
                            + " page records; the source sent " + sent);
                    }
                    t.release(chunk);
                    if (t.receive() != null) {
                        throw new MigrationException("multifd channel " + index + " continues after its END record");
                    }
                    pages.addAndGet(received);
                    zeroPages.addAndGet(zero);
                    return;
                } else {
                    throw new MigrationException("stream is corrupted: multifd channel " + index + " has record type " + type
                        + " at chunk offset " + at);
                }
            }
        }

        private static ByteBuffer next(Transport t, String expecting) {
            ByteBuffer b = t.receive();
            if (b == null) {
                throw new MigrationException("stream is truncated: a multifd channel ended before " + expecting);
            }
            return b;
        }
    }
}
