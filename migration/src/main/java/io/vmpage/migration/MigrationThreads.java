package io.vmpage.migration;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.SynchronousQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;

/**
 * The threads a migration runs beside its caller's: the destination's receiver and the multifd channels'
 * threads. They come from one pool of daemon threads that keeps an idle thread for
 * {@value #KEEP_SECONDS} s, so that migrations one after another (a benchmark, a test suite, a policy lab
 * moving VMs back and forth) do not start threads each time: on this 2-core host a thread's start and
 * join cost 0.13-0.26 ms, and with both cores busy a new thread first ran up to 0.8 ms after its start, where
 * an idle pooled thread is handed its work in tens of microseconds. While it runs a task a thread carries
 * the task's name ({@code migration-destination-vm3}, {@code multifd-send-1-vm3}...); idle, {@value #IDLE}.
 */
final class MigrationThreads {
    /** The name of a pooled thread between tasks. */
    static final String IDLE = "vmpage-migration-idle";
    private static final long KEEP_SECONDS = 30;
    private static final ThreadPoolExecutor POOL = new ThreadPoolExecutor(0, Integer.MAX_VALUE, KEEP_SECONDS, TimeUnit.SECONDS,
        new SynchronousQueue<>(), runnable -> {
            Thread t = new Thread(runnable, IDLE);
            t.setDaemon(true);
            return t;
        });

    private MigrationThreads() {
    }

    /** Runs {@code body} on a pooled thread named {@code name} while it runs. */
    static Task start(String name, Runnable body) {
        Task task = new Task(name, body);
        POOL.execute(task);
        return task;
    }

    /**
     * One task on a pooled thread, joined like a thread. The body catches what it throws (each of the
     * migration's bodies hands its failure over itself); whatever escapes it ends the task all the same.
     */
    static final class Task implements Runnable {
        private final String name;
        private final Runnable body;
        /** Counted down once the body ended and its thread is named idle again. */
        private final CountDownLatch ended = new CountDownLatch(1);

        private Task(String name, Runnable body) {
            this.name = name;
            this.body = body;
        }

        @Override
        public void run() {
            Thread self = Thread.currentThread();
            self.setName(name);
            try {
                body.run();
            } finally {
                self.setName(IDLE);
                Thread.interrupted(); // the next task starts uninterrupted
                ended.countDown();
            }
        }

        /** Whether the body ended. */
        boolean ended() {
            return ended.getCount() == 0;
        }

        /** Waits until the body ended; interrupted, throws a {@link MigrationException} naming {@code what} it waited for. */
        void join(String what) {
            try {
                ended.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new MigrationException("interrupted while waiting for " + what, e);
            }
        }

        /** Waits up to {@code millis} for the body to end; whether it did (false too when interrupted, the flag set again). */
        boolean join(long millis) {
            try {
                return ended.await(millis, TimeUnit.MILLISECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return false;
            }
        }
    }
}
