package io.vmpage.migration;

import io.vmpage.engine.Vm;
import java.util.concurrent.locks.LockSupport;

/**
 * A destination's PAGE records by reference, copied out of the source VM its transport offers in batches
 * of consecutive records ({@link Vm#copyFramesFrom}: a batch pays the host accesses and the frame
 * allocation once). Whoever reads the records {@link #flush}es before any other record and before the
 * stream ends, so that pages land in stream order with the rest. One destination thread, plus, when asked
 * for, one helper thread that copies the upper half of each large batch while the reading thread copies
 * the lower half (as QEMU's multifd receive threads share the placing of pages): the copy is bound by
 * memory bandwidth, not by a core, yet two threads copy a batch in about 0.76x the time of one on this
 * host (JMH {@code MigrationBench.rawCopyTwoThreads}). {@link #close} stops the helper.
 */
final class PageReferences implements AutoCloseable {
    /** Batches at least this large are split with the helper (smaller ones cost more to hand over than to copy). */
    private static final int SPLIT = 512;

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
        int half = n / 2;
        helper.copy(gfns, half, n - half);
        Throwable mine = null;
        try {
            vm.copyFramesFrom(source, gfns, half);
        } catch (RuntimeException | Error e) {
            mine = e;
        }
        Throwable theirs = helper.await(); // the array is the helper's until it is done with its half
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
     * The helper thread: copies {@code gfns[from..from+n)} when handed them, and says when it is done. The
     * hand-over is a volatile write of {@link #work} (after the array and the bounds) and an unpark; the
     * reply a volatile write of {@link #work} back to null (after the copy and its failure, if any), which
     * the reading thread spins on: the two halves take about as long.
     */
    private static final class Helper implements Runnable {
        private final Vm vm;
        private final Vm source;
        private final Thread thread;
        private long[] gfns;
        private int from;
        private int n;
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

        void copy(long[] batch, int start, int length) {
            gfns = batch;
            from = start;
            n = length;
            failure = null;
            work = batch;
            LockSupport.unpark(thread);
        }

        /** Waits for the half handed over; its failure, or null. */
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

        void stop() {
            stopped = true;
            LockSupport.unpark(thread);
        }

        @Override
        public void run() {
            while (!stopped) {
                if (work == null) {
                    LockSupport.park(this);
                    continue;
                }
                try {
                    vm.copyFramesFrom(source, gfns, from, n);
                } catch (Throwable t) {
                    failure = t;
                }
                work = null;
            }
        }
    }
}
