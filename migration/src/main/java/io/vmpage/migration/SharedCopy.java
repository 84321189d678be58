package io.vmpage.migration;

import io.vmpage.engine.Vm;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

/**
 * A destination's batch of pages by reference, copied out of the source VM by its reading thread and by
 * whichever other thread has nothing better to do: in process, the source's migration thread, once it
 * has sent the END and only waits for the destination ({@link Transport#sharedCopy}). Both take pieces of
 * {@link #PIECE} pages from a shared cursor, pieces rather than halves, since the two cores of this host do
 * not copy memory equally fast (ad hoc: 64 MiB in 4.0 ms on one, 6.9 ms on the other), and each piece is
 * one engine batch ({@link Vm#copyFramesFrom}). The copy is bound by memory bandwidth more than by a core,
 * yet two threads copy in about 0.7x-0.76x the time of one here (JMH {@code MigrationBench.rawCopyTwoThreads}).
 *
 * <p>The source's thread helps rather than a helper thread of the destination's: on 2 cores, a third
 * thread that wants a core (the source scanning while the destination's two copy) waits for it, up to
 * 0.8 ms here for a thread just woken, and a piece it holds holds up the batch that long.
 *
 * <p>Threads: one owner ({@link #copy}, the destination's reading thread), any number of helpers
 * ({@link #help}). {@link #copy} returns once every piece of its batch is copied, by whom ever, and no
 * helper touches the batch after that.
 */
public final class SharedCopy {
    /** Pages a thread takes from a batch at a time. */
    static final int PIECE = 64;
    private final Vm vm;
    private final Vm source;
    private final int piece;
    /**
     * The batch being copied, null between batches. Written by the owner (volatile: a helper that reads a
     * batch sees its pages), read by helpers.
     */
    private volatile Batch current;

    SharedCopy(Vm vm, Vm source) {
        this(vm, source, PIECE);
    }

    /** Pieces of {@code piece} pages (the jcstress test races pieces of one page, in VMs of a few pages). */
    SharedCopy(Vm vm, Vm source, int piece) {
        if (piece < 1) {
            throw new IllegalArgumentException("a piece has at least one page: " + piece);
        }
        this.vm = vm;
        this.source = source;
        this.piece = piece;
    }

    /**
     * Owner: copies {@code gfns[0..n)} out of the source, with any help that comes; returns when every page
     * is in place, and throws the first failure of any piece (once no piece is being copied any more).
     */
    void copy(long[] gfns, int n) {
        Batch b = new Batch(java.util.Arrays.copyOf(gfns, n));
        current = b;
        try {
            while (b.copyPiece(vm, source, piece)) {
                // the owner takes pieces until none is left
            }
        } finally {
            current = null;
        }
        b.awaitHelpers();
        Throwable failed = b.failure.get();
        if (failed instanceof RuntimeException r) {
            throw r;
        }
        if (failed instanceof Error e) {
            throw e;
        }
    }

    /** Helper: copies one piece of the batch being copied, if one is left; whether it did. Never throws. */
    boolean help() {
        Batch b = current;
        return b != null && b.copyPiece(vm, source, piece);
    }

    /** One batch: its pages, the cursor its pieces are taken from, and the threads inside a piece. */
    private static final class Batch {
        private final long[] gfns;
        /** The first page no thread took yet (it runs past the end as threads look for more). */
        private final AtomicInteger cursor = new AtomicInteger();
        /**
         * Threads between taking from the cursor and finishing their piece. A thread counts itself in before
         * it takes: once the owner found the cursor at the end and this at 0, no thread copies any more.
         */
        private final AtomicInteger inside = new AtomicInteger();
        /** The first piece's failure; the cursor is moved to the end with it, so no piece starts after it. */
        private final AtomicReference<Throwable> failure = new AtomicReference<>();

        Batch(long[] gfns) {
            this.gfns = gfns;
        }

        /** Takes and copies the next piece; false when none was left. A piece's failure is kept, not thrown. */
        boolean copyPiece(Vm vm, Vm source, int piece) {
            inside.incrementAndGet();
            try {
                int from = cursor.getAndAdd(piece);
                if (from >= gfns.length) {
                    return false;
                }
                try {
                    vm.copyFramesFrom(source, gfns, from, Math.min(piece, gfns.length - from));
                } catch (Throwable t) {
                    failure.compareAndSet(null, t);
                    cursor.set(gfns.length); // later takes find nothing
                }
                return true;
            } finally {
                inside.decrementAndGet();
            }
        }

        /** Owner, after its last take found nothing: waits for the pieces other threads are still copying. */
        void awaitHelpers() {
            for (int spins = 1; inside.get() != 0; spins++) {
                if ((spins & 1023) == 0) {
                    Thread.yield();
                } else {
                    Thread.onSpinWait();
                }
            }
        }
    }
}
