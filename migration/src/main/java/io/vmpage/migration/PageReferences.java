package io.vmpage.migration;

import io.vmpage.engine.Vm;
import java.util.concurrent.locks.LockSupport;

/**
 * A destination's PAGE records by reference, copied out of the source VM its transport offers in batches
 * of consecutive records ({@link Vm#copyFramesFrom}: a batch pays the host accesses and the frame
 * allocation once). Whoever reads the records {@link #flush}es before any other record and before the
 * stream ends, so that pages land in stream order with the rest. One destination thread, plus, when asked
 * for, one helper thread that shares each large batch with the reading thread, piece by piece (as QEMU's
 * multifd receive threads share the placing of pages): the copy is bound by memory bandwidth more than by a
 * core, yet two threads copy in about 0.7x-0.76x the time of one on this host (JMH
 * {@code MigrationBench.rawCopyTwoThreads}). {@link #close} stops the helper.
 */
final class PageReferences implements AutoCloseable {
    /** Batches at least this large are shared with the helper (smaller ones cost more to hand over than to copy). */
    private static final int SPLIT = 512;
    /** Pages a thread takes from a batch at a time. */
    private static final int PIECE = 64;
    /** The next page of the batch being copied that no thread took yet. */
    private final java.util.concurrent.atomic.AtomicInteger cursor = new java.util.concurrent.atomic.AtomicInteger();

    private final Vm vm;
    private final Transport transport;
    private final long[] gfns = new long[2048];
    private int count;
    private Vm source;
    /** The helper, when one was asked for; started with the first batch large enough to split. */
    private final boolean helped;
    private Helper helper;

    /** Copies on the calling thread alone. */
    PageReferences(Vm vm, Transport transport) {
        this(vm, transport, false);
    }

    /** With {@code helped}, large batches are copied on two threads. */
    PageReferences(Vm vm, Transport transport, boolean helped) {
        this.vm = vm;
        this.transport = transport;
        this.helped = helped;
    }

    /** Guest frame {@code gfn} is to be copied out of the source. */
    void add(long gfn) {
        if (source == null) {
            source = offeredSource();
        }
        gfns[count++] = gfn;
        if (count == gfns.length) {
            flush();
        }
    }

    /** Copies every page added so far; on return they are all in place. */
    void flush() {
        int n = count;
        if (n == 0) {
            return;
        }
        count = 0;
        if (!helped || n < SPLIT) {
            vm.copyFramesFrom(source, gfns, n);
            return;
        }
        if (helper == null) {
            helper = new Helper(vm, source, "migration-copy-vm" + vm.id());
        }
        cursor.set(0);
        helper.copy(gfns, cursor, n);
        Throwable mine = null;
        try {
            drain(vm, source, gfns, cursor, n);
        } catch (RuntimeException | Error e) {
            cursor.set(n); // the helper takes no more
            mine = e;
        }
        Throwable theirs = helper.await(); // the array is the helper's until it is done with its last piece
        if (mine instanceof RuntimeException r) {
            throw r;
        }
        if (mine != null) {
            throw (Error) mine;
        }
        if (theirs != null) {
            throw theirs instanceof RuntimeException r ? r : new MigrationException("page copy failed: " + theirs, theirs);
        }
    }

    /**
     * Copies pieces of {@code gfns[0..end)}, {@link #PIECE} pages each, taken from {@code cursor} until none is
     * left: the two threads share a batch by taking pieces, not halves, since the two cores of this host do
     * not copy memory equally fast (ad hoc: 64 MiB in 4.0 ms on one, 6.9 ms on the other), and each piece is
     * one engine batch.
     */
    private static void drain(Vm vm, Vm source, long[] gfns, java.util.concurrent.atomic.AtomicInteger cursor, int end) {
        for (int from = cursor.getAndAdd(PIECE); from < end; from = cursor.getAndAdd(PIECE)) {
            vm.copyFramesFrom(source, gfns, from, Math.min(PIECE, end - from));
        }
    }

    /** Stops the helper, if one runs (pages added and not flushed are dropped). */
    @Override
    public void close() {
        if (helper != null) {
            helper.stop();
            helper = null;
        }
    }

    private Vm offeredSource() {
        Vm s = transport.offeredMemory();
        if (s == null) {
            throw new MigrationException("stream is corrupted: a page is sent by reference over a transport that offers"
                + " no source memory");
        }
        if (s.physicalMap().frames() != vm.physicalMap().frames()) {
            throw new MigrationException("stream is corrupted: pages by reference from a VM of " + s.physicalMap().frames()
                + " frames into one of " + vm.physicalMap().frames());
        }
        return s;
    }

    /**
     * The helper thread: copies pieces of a batch when handed one, and says when it is done. The
     * hand-over is a volatile write of {@link #work} (after the array and the bounds) and an unpark; the
     * reply a volatile write of {@link #work} back to null (after the copy and its failure, if any), which
     * the reading thread spins on: the two halves take about as long.
     */
    private static final class Helper implements Runnable {
        private final Vm vm;
        private final Vm source;
        private final Thread thread;
        private long[] gfns;
        private java.util.concurrent.atomic.AtomicInteger cursor;
        private int end;
        private Throwable failure;
        /** The batch handed over, null while the helper has none. Written by both threads (volatile). */
        private volatile long[] work;
        private volatile boolean stopped;

        Helper(Vm vm, Vm source, String name) {
            this.vm = vm;
            this.source = source;
            this.thread = new Thread(this, name);
            thread.setDaemon(true);
            thread.start();
        }

        void copy(long[] batch, java.util.concurrent.atomic.AtomicInteger pieces, int length) {
            gfns = batch;
            cursor = pieces;
            end = length;
            failure = null;
            work = batch;
            LockSupport.unpark(thread);
        }

        /** Waits until the helper took no more pieces of the batch and finished its last; its failure, or null. */
        Throwable await() {
            for (int spins = 1; work != null; spins++) {
                if (!thread.isAlive()) {
                    return new MigrationException("the page-copy helper thread died");
                }
                if ((spins & 1023) == 0) {
                    Thread.yield();
                } else {
                    Thread.onSpinWait();
                }
            }
            return failure;
        }

        /** Stops the thread and waits for it to end (it is between batches: every flush waited for it). */
        void stop() {
            stopped = true;
            LockSupport.unpark(thread);
            try {
                thread.join(1_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }

        @Override
        public void run() {
            while (!stopped) {
                if (work == null) {
                    LockSupport.park(this);
                    continue;
                }
                try {
                    drain(vm, source, gfns, cursor, end);
                } catch (Throwable t) {
                    failure = t;
                }
                work = null;
            }
        }
    }
}
