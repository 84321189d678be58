package io.vmpage.bench.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.vmpage.engine.GuestFaultException;
import io.vmpage.engine.Host;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.guest.GuestKernel;
import io.vmpage.migration.Destination;
import io.vmpage.migration.Devices;
import io.vmpage.migration.MigrationException;
import io.vmpage.migration.MemoryTransport;
import io.vmpage.migration.PostCopyPausedException;
import io.vmpage.migration.RemoteMigration;
import io.vmpage.migration.TcpTransport;
import io.vmpage.migration.Workload;
import io.vmpage.mmu.Access;
import java.io.PrintWriter;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Consumer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code vmpage host --listen [ADDR:]PORT}: a migration destination in its own process, as QEMU's
 * {@code -incoming tcp:ADDR:PORT}. It listens, takes one migration stream into a new VM on its host
 * (whatever mode the source chose), resumes the VM, replies to the source with the page hashes it
 * verifies against, and runs the VM's vCPUs from the resume until {@code --run} after its last page
 * came: one thread per vCPU writes across the heap of a {@code vmpage migrate} guest and reads its last
 * values back, through the migrated page tables and registers. In post-copy they start at the
 * switch-over, so the pages they touch before the push brings them are fetched on demand, as QEMU's
 * destination vCPUs fault them in. The line {@code listening on ADDR:PORT} goes to stderr first (with
 * port 0, the port the system chose): {@code vmpage migrate --transport tcp} reads it from the child it
 * starts.
 * Exit 0 when the VM arrived and ran, 1 when the stream was lost or rejected, 2 on bad flags.
 */
@Command(name = "host", mixinStandardHelpOptions = true,
    description = "Runs a migration destination: listens on a TCP port, receives one VM, resumes it and runs it.")
public final class HostCommand implements Callable<Integer> {
    private static final ObjectMapper JSON = new ObjectMapper();

    @Spec
    CommandSpec spec;

    @Option(names = "--listen", paramLabel = "[ADDR:]PORT", required = true,
        description = "Where to listen; ADDR defaults to 127.0.0.1 (0.0.0.0: every interface), PORT 0 picks a free one.")
    String listen;

    @Option(names = "--memory-limit", paramLabel = "SIZE", defaultValue = "4g",
        description = "This host's machine memory, mapped lazily: the largest VM it takes plus its tables. Default: ${DEFAULT-VALUE}.")
    String memoryLimit;

    @Option(names = "--wait", paramLabel = "DURATION", defaultValue = "0s",
        description = "How long to wait for a source to connect; 0s: for ever. Default: ${DEFAULT-VALUE}.")
    String wait;

    @Option(names = "--stall-timeout", paramLabel = "DURATION", defaultValue = "10s",
        description = "A source silent this long mid-stream has failed the migration. Default: ${DEFAULT-VALUE}.")
    String stallTimeout;

    @Option(names = "--run", paramLabel = "DURATION", defaultValue = "200ms",
        description = "How long the vCPUs run on this host once every page is here; they run from the resume on"
            + " (in post-copy, while pages arrive). 0s: not at all. Default: ${DEFAULT-VALUE}.")
    String run;

    @Option(names = "--json", arity = "0..1", fallbackValue = "-", paramLabel = "FILE",
        description = "Write the result as one JSON object to FILE, or to stdout when FILE is omitted or '-'.")
    String json;

    @Override
    public Integer call() throws Exception {
        InetSocketAddress address = MigrateCommand.address("--listen", listen, true);
        long limit = Units.parseSize("--memory-limit", memoryLimit, 64L << 20, 1L << 40);
        long waitNanos = MigrateCommand.duration("--wait", wait);
        long stallNanos = MigrateCommand.duration("--stall-timeout", stallTimeout);
        if (stallNanos < 10_000_000L) {
            throw new Cli.UsageException("--stall-timeout " + stallTimeout + " must be at least 10ms");
        }
        long runNanos = MigrateCommand.duration("--run", run);
        if (runNanos > 600_000_000_000L) {
            throw new Cli.UsageException("--run " + run + " must be at most 600s");
        }
        PrintWriter out = spec.commandLine().getOut();
        PrintWriter err = spec.commandLine().getErr();
        try (Host host = Cli.createHost(limit, "--memory-limit " + memoryLimit);
             ServerSocketChannel listener = listen(address)) {
            InetSocketAddress bound = (InetSocketAddress) listener.getLocalAddress();
            err.println("listening on " + bound.getHostString() + ":" + bound.getPort());
            err.flush();
            RemoteMigration.Received received;
            AtomicReference<GuestKernel> kernel = new AtomicReference<>(); // the guest's kernel, when the stream carries it
            AtomicLong resumedAt = new AtomicLong();
            // The vCPUs start at the resume, as the destination's vCPU threads do in QEMU: in post-copy that is
            // before most pages are here, and what they touch first is fetched on demand over the return path.
            AtomicReference<Driving> driving = new AtomicReference<>();
            Consumer<Vm> resumed = vm -> {
                resumedAt.set(System.nanoTime());
                driving.set(Driving.start(vm, runNanos > 0));
            };
            try {
                received = receiveRecovering(host, listener, kernel, resumed, err, waitNanos, stallNanos);
            } catch (MigrationException e) {
                Driving started = driving.get();
                if (started != null) {
                    started.stopIn(0);
                    started.join(); // the VM is gone: a vCPU waiting for a frame gives up
                }
                err.println("vmpage: host: migration failed: " + e.getMessage());
                err.flush();
                return Cli.VERIFICATION_FAILED;
            }
            Vm vm = received.vm();
            Driving started = driving.get();
            if (started != null) {
                started.stopIn(runNanos); // every page is here now
            }
            Driven driven = started == null ? new Driven(0, 0, "the VM was never resumed") : started.join();
            long ranFor = System.nanoTime() - resumedAt.get();
            GuestKernel restored = kernel.get();
            Cli.emit(out, json, () -> json(vm, received, driven, restored), () -> text(vm, received, driven, ranFor, restored));
            host.destroyVm(vm);
            return driven.failure == null ? Cli.OK : Cli.VERIFICATION_FAILED;
        }
    }

    /**
     * Receives one VM; when its post-copy loses the connection after the switch-over (QEMU's
     * postcopy-paused: the VM runs here on what it has), waits on the same listener for the source to
     * reconnect and recovers, as often as it takes (each wait at most --wait, or 60 s when that is 0).
     */
    private static RemoteMigration.Received receiveRecovering(Host host, ServerSocketChannel listener, AtomicReference<GuestKernel> kernel,
                                                       Consumer<Vm> resumed, PrintWriter err, long waitNanos, long stallNanos) {
        long stallMillis = stallNanos / 1_000_000;
        try (TcpTransport connection = TcpTransport.accept(listener, MemoryTransport.DEFAULT_CHUNK, stallMillis, waitNanos / 1_000_000)) {
            return RemoteMigration.receive(host, connection, Workload.loadKernel(Devices.none(), kernel), resumed);
        } catch (PostCopyPausedException paused) {
            Destination.Paused here = paused.destination();
            long recoverMillis = waitNanos > 0 ? waitNanos / 1_000_000 : 60_000;
            while (true) {
                err.println("vmpage: host: post-copy paused (" + here.framesLeft() + " frames still on the source; the VM runs on"
                    + " what it has): " + paused.getMessage() + "; waiting " + recoverMillis + " ms for the source to reconnect");
                err.flush();
                try (TcpTransport again = TcpTransport.accept(listener, MemoryTransport.DEFAULT_CHUNK, stallMillis, recoverMillis)) {
                    RemoteMigration.Received r = RemoteMigration.recover(here, again);
                    err.println("vmpage: host: post-copy recovered");
                    err.flush();
                    return r;
                } catch (PostCopyPausedException again) {
                    paused = again;
                } catch (MigrationException gaveUp) {
                    host.destroyVm(here.vm());
                    throw new MigrationException("post-copy paused and not recovered: " + gaveUp.getMessage(), gaveUp);
                }
            }
        }
    }

    private static ServerSocketChannel listen(InetSocketAddress address) {
        try {
            return TcpTransport.listen(address);
        } catch (MigrationException e) {
            throw new Cli.UsageException("--listen " + address.getHostString() + ":" + address.getPort() + ": " + e.getMessage());
        }
    }

    /** What the vCPUs did on this host: writes done, the heap pages they were spread over, or why they could not run. */
    private record Driven(long writes, long pages, String failure) {
    }

    /**
     * The vCPUs of the VM just resumed, one thread each, until {@link #stopIn} (the host calls it once every
     * page is here, with {@code --run}): vCPU {@code i} of {@code n} writes
     * a counter into heap pages {@code i, i + n, i + 2n, ...} of a {@code vmpage migrate} guest ({@link
     * Workload#page}) in turn, round and round, through the guest's own tables, and at the end reads back the
     * last value of every page it wrote. The heap's extent is found by touching it ({@link #heapPages}).
     */
    private static final class Driving {
        private final Thread[] threads;
        private final AtomicLong writes = new AtomicLong();
        private final AtomicLong pages = new AtomicLong();
        private final AtomicReference<String> failure = new AtomicReference<>();
        /** When the vCPUs stop ({@code System.nanoTime()}): never until {@link #stopIn}; volatile, read at every write. */
        private volatile long until = Long.MAX_VALUE;

        private Driving(int vcpus) {
            threads = new Thread[vcpus];
        }

        /** Starts the vCPUs of {@code vm}, or none when not {@code runs} ({@code --run 0s}). */
        static Driving start(Vm vm, boolean runs) {
            Driving d = new Driving(runs ? vm.vcpus().size() : 0);
            for (int i = 0; i < d.threads.length; i++) {
                Vcpu cpu = vm.vcpu(i);
                d.threads[i] = new Thread(() -> d.run(cpu, d.threads.length), "host-vcpu-" + i);
                d.threads[i].setDaemon(true);
                d.threads[i].start();
            }
            return d;
        }

        /** The vCPUs stop {@code nanos} from now. */
        void stopIn(long nanos) {
            until = System.nanoTime() + nanos;
        }

        private void run(Vcpu cpu, int n) {
            int i = cpu.index();
            try {
                cpu.attachThread();
                try {
                    long heap = heapPages(cpu, cpu.vm().memorySize() >>> 12);
                    if (heap == 0) {
                        failure.compareAndSet(null, "vCPU " + i + ": nothing mapped at 0x" + Long.toHexString(Workload.HEAP)
                            + ": not a vmpage migrate guest?");
                        return;
                    }
                    long mine = heap > i ? (heap - 1 - i) / n + 1 : 0; // pages i, i + n, ... below heap
                    if (mine == 0) {
                        return;
                    }
                    long value = 0;
                    while (System.nanoTime() < until) {
                        cpu.writeLong(Workload.page((int) (i + (value % mine) * n)) + 16, ++value);
                    }
                    writes.addAndGet(value);
                    long written = Math.min(value, mine);
                    pages.addAndGet(written);
                    for (long k = 0; k < written; k++) {
                        long last = k + 1 + mine * ((value - 1 - k) / mine); // the last value v <= value with (v - 1) % mine == k
                        long va = Workload.page((int) (i + k * n)) + 16;
                        long found = cpu.readLong(va);
                        if (found != last) {
                            failure.compareAndSet(null, "vCPU " + i + " read back " + found + " at 0x" + Long.toHexString(va) + ", not " + last);
                            return;
                        }
                    }
                } finally {
                    cpu.detachThread();
                }
            } catch (GuestFaultException e) {
                failure.compareAndSet(null, "vCPU " + i + " faulted on the heap (" + e.getMessage() + "): not a vmpage migrate guest?");
            } catch (RuntimeException e) {
                failure.compareAndSet(null, "vCPU " + i + ": " + e);
            }
        }

        Driven join() throws InterruptedException {
            for (Thread t : threads) {
                t.join();
            }
            return new Driven(writes.get(), pages.get(), failure.get());
        }
    }

    /**
     * How many pages the guest has mapped from {@link Workload#HEAP} on (at most {@code cap}): the first page
     * a touch faults on, found by doubling and then halving, as a program that touches past its mapping gets
     * the page fault its kernel refuses (SIGSEGV). Touching a page of a post-copy guest fetches it.
     */
    private static long heapPages(Vcpu cpu, long cap) {
        if (cap < 1 || !mapped(cpu, 0)) {
            return 0;
        }
        long lo = 1; // pages [0, lo) mapped
        long hi = 2; // page hi - 1 not mapped, once the doubling stops
        while (hi <= cap && mapped(cpu, hi - 1)) {
            lo = hi;
            hi *= 2;
        }
        if (hi > cap) {
            if (mapped(cpu, cap - 1)) {
                return cap;
            }
            hi = cap;
        }
        while (hi - lo > 1) {
            long mid = (lo + hi) >>> 1;
            if (mapped(cpu, mid - 1)) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        return lo;
    }

    private static boolean mapped(Vcpu cpu, long page) {
        try {
            cpu.translate(Workload.HEAP + page * 4096, Access.READ);
            return true;
        } catch (GuestFaultException e) {
            return false;
        }
    }

    private static String text(Vm vm, RemoteMigration.Received r, Driven d, long ranNanos, GuestKernel kernel) {
        StringBuilder b = new StringBuilder();
        b.append(String.format(Locale.ROOT, "received a %s %s VM with %d vCPUs: %d page records (%d zero) in %d rounds%n",
            Units.formatSize(vm.memorySize()), vm.pagingMode().name().toLowerCase(Locale.ROOT), vm.vcpus().size(), r.pages(),
            r.zeroPages(), r.rounds()));
        if (r.postCopy() != null) {
            b.append(String.format(Locale.ROOT, "  post-copy: %d pages pulled by faults (latency p50 %d us, p99 %d us, max %d us),"
                + " %d pushed in all%n", r.postCopy().faults(), r.postCopy().p50Micros(), r.postCopy().p99Micros(),
                r.postCopy().maxMicros(), r.postCopy().pagesPushed()));
        }
        if (kernel != null) {
            b.append(String.format(Locale.ROOT, "  guest kernel restored from the stream's device state: %d free guest frames%n",
                kernel.freeFrameCount()));
        }
        b.append(d.failure == null
            ? String.format(Locale.ROOT, "  the vCPUs ran here for %.0f ms from the resume: %d writes over %d heap pages, the last of"
                + " each read back%n", ranNanos / 1e6, d.writes, d.pages)
            : "  the vCPUs did not run: " + d.failure + System.lineSeparator());
        return b.toString();
    }

    private static String json(Vm vm, RemoteMigration.Received r, Driven d, GuestKernel kernel) {
        ObjectNode o = JSON.createObjectNode();
        o.put("memory_bytes", vm.memorySize());
        o.put("paging", vm.pagingMode().name().toLowerCase(Locale.ROOT));
        o.put("vcpus", vm.vcpus().size());
        o.put("pages_received", r.pages());
        o.put("zero_pages", r.zeroPages());
        o.put("rounds", r.rounds());
        if (r.postCopy() != null) {
            o.put("postcopy_faults", r.postCopy().faults());
        }
        if (kernel != null) {
            o.put("guest_kernel_free_frames", kernel.freeFrameCount());
        } else {
            o.putNull("guest_kernel_free_frames");
        }
        o.put("writes_after_resume", d.writes);
        o.put("pages_written_after_resume", d.pages);
        o.put("ran", d.failure == null);
        if (d.failure != null) {
            o.put("failure", d.failure);
        }
        return o.toString();
    }
}
