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
import java.io.PrintWriter;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code vmpage host --listen [ADDR:]PORT}: a migration destination in its own process, as QEMU's
 * {@code -incoming tcp:ADDR:PORT}. It listens, takes one migration stream into a new VM on its host
 * (whatever mode the source chose), resumes the VM, replies to the source with the page hashes it
 * verifies against, and lets the VM's vCPUs run for {@code --run}: one thread per vCPU writes the
 * first heap page of a {@code vmpage migrate} guest and reads it back, through the migrated page tables
 * and registers. The line {@code listening on ADDR:PORT} goes to stderr first (with port 0, the port
 * the system chose): {@code vmpage migrate --transport tcp} reads it from the child it starts.
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
        description = "How long the vCPUs run on this host after the resume (0s: not at all). Default: ${DEFAULT-VALUE}.")
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
            long resumedAt;
            AtomicReference<GuestKernel> kernel = new AtomicReference<>(); // the guest's kernel, when the stream carries it
            AtomicLong resumed = new AtomicLong();
            try {
                received = receiveRecovering(host, listener, kernel, resumed, err, waitNanos, stallNanos);
                resumedAt = resumed.get();
            } catch (MigrationException e) {
                err.println("vmpage: host: migration failed: " + e.getMessage());
                err.flush();
                return Cli.VERIFICATION_FAILED;
            }
            Vm vm = received.vm();
            Driven driven = drive(vm, runNanos);
            long ranFor = System.nanoTime() - resumedAt;
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
                                                       AtomicLong resumed, PrintWriter err, long waitNanos, long stallNanos) {
        long stallMillis = stallNanos / 1_000_000;
        try (TcpTransport connection = TcpTransport.accept(listener, MemoryTransport.DEFAULT_CHUNK, stallMillis, waitNanos / 1_000_000)) {
            return RemoteMigration.receive(host, connection, Workload.loadKernel(Devices.none(), kernel), vm -> resumed.set(System.nanoTime()));
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

    /** What the vCPUs did on this host: writes done and checked, or why they could not run. */
    private record Driven(long writes, String failure) {
    }

    /**
     * One thread per vCPU writes a counter into its writer's first heap page ({@link Workload#page}) and
     * reads the last value back, for {@code nanos}: the vCPUs run here, through the guest's own tables.
     */
    private static Driven drive(Vm vm, long nanos) throws InterruptedException {
        if (nanos == 0) {
            return new Driven(0, null);
        }
        AtomicLong writes = new AtomicLong();
        AtomicReference<String> failure = new AtomicReference<>();
        Thread[] threads = new Thread[vm.vcpus().size()];
        long until = System.nanoTime() + nanos;
        for (int i = 0; i < threads.length; i++) {
            Vcpu cpu = vm.vcpu(i);
            long va = Workload.page(i) + 16;
            threads[i] = new Thread(() -> {
                try {
                    cpu.attachThread();
                    try {
                        long value = 0;
                        while (System.nanoTime() < until) {
                            cpu.writeLong(va, ++value);
                            writes.incrementAndGet();
                        }
                        if (value > 0 && cpu.readLong(va) != value) {
                            failure.compareAndSet(null, "vCPU " + cpu.index() + " read back " + cpu.readLong(va) + ", not " + value);
                        }
                    } finally {
                        cpu.detachThread();
                    }
                } catch (GuestFaultException e) {
                    failure.compareAndSet(null, "vCPU " + cpu.index() + " faulted at 0x" + Long.toHexString(va) + " (" + e.getMessage()
                        + "): not a vmpage migrate guest?");
                } catch (RuntimeException e) {
                    failure.compareAndSet(null, "vCPU " + cpu.index() + ": " + e);
                }
            }, "host-vcpu-" + i);
            threads[i].start();
        }
        for (Thread t : threads) {
            t.join();
        }
        return new Driven(writes.get(), failure.get());
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
            ? String.format(Locale.ROOT, "  the vCPUs ran here for %.0f ms after the resume: %d writes, each read back%n", ranNanos / 1e6,
                d.writes)
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
        o.put("ran", d.failure == null);
        if (d.failure != null) {
            o.put("failure", d.failure);
        }
        return o.toString();
    }
}
