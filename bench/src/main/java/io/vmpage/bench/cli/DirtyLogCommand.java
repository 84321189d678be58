package io.vmpage.bench.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.vmpage.engine.ExitReason;
import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.dirty.DirtySnapshot;
import io.vmpage.engine.dirty.DirtyTracking;
import io.vmpage.engine.guest.GuestKernel;
import io.vmpage.mmu.Access;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.NativeMemoryException;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.concurrent.atomic.AtomicReference;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code vmpage dirty-log}: the phases of KVM's {@code dirty_log_perf_test} selftest on this engine. Each
 * vCPU (its own thread) owns a region of guest memory: populate it, enable dirty logging, then per
 * iteration every vCPU writes every page of its region once and the log is harvested (with the vCPUs
 * stopped between iterations, so each harvest must report every page written in its iteration); then
 * disable. Copying what each harvest reports, after a full copy at enable, must end equal to guest
 * memory (a pre-copy that converges), compared page by page, byte for byte. Exit 1 when a page is missing
 * or the copy differs.
 *
 * <p>The run touches all of guest memory (every vCPU page is written, the bulk copy reads the rest) and
 * holds the copy beside it, off-heap ({@link GuestCopy}): about twice the guest in host RAM. A
 * configuration the host cannot hold is refused before anything is allocated (one line, exit 2), rather
 * than being killed by the kernel part-way.
 */
@Command(name = "dirty-log", mixinStandardHelpOptions = true,
    description = "Times dirty logging phase by phase (after KVM's dirty_log_perf_test) and checks that no write is lost.")
public final class DirtyLogCommand implements Callable<Integer> {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final long HEAP = 0x0000_5555_0000_0000L;
    /** Guest memory beyond the vCPUs' regions: the guest kernel's page tables and direct-map bookkeeping. */
    private static final long KERNEL_BYTES = 32L << 20;
    static final int MAX_VCPUS = 16;
    static final long MAX_MEMORY_PER_VCPU = 1L << 30;

    @Spec
    CommandSpec spec;

    @Option(names = "--paging", paramLabel = "MODE", defaultValue = "nested",
        description = "nested, shadow or pv. Default: ${DEFAULT-VALUE}.")
    String paging;

    @Option(names = "--method", paramLabel = "METHOD", defaultValue = "write-protect",
        description = "write-protect, dirty-bits (nested only) or dirty-ring. Default: ${DEFAULT-VALUE}.")
    String method;

    @Option(names = "--vcpus", paramLabel = "N", defaultValue = "2", description = "Writer vCPUs, 1 to 16. Default: ${DEFAULT-VALUE}.")
    int vcpus;

    @Option(names = "--memory", paramLabel = "SIZE", defaultValue = "16m",
        description = "Guest memory each vCPU writes, 4k to 1g in whole 4 KiB pages (the run needs about twice"
            + " vCPUs x SIZE of host RAM). Default: ${DEFAULT-VALUE}.")
    String memory;

    @Option(names = "--iterations", paramLabel = "N", defaultValue = "4", description = "Write + harvest rounds. Default: ${DEFAULT-VALUE}.")
    int iterations;

    @Option(names = "--ring-size", paramLabel = "N", defaultValue = "4096",
        description = "Entries per vCPU dirty ring (power of two, 64 to 65536). Default: ${DEFAULT-VALUE}.")
    int ringSize;

    @Option(names = "--json", arity = "0..1", fallbackValue = "-", paramLabel = "FILE",
        description = "Write the result as one JSON object to FILE, or to stdout when FILE is omitted or '-'.")
    String json;

    /** One write + harvest round. */
    record Iteration(double dirtyMs, double harvestMs, long reported, long missing, long dirtyLogExits, long ringFullExits) {
    }

    /** The whole run; {@code firstDifference} is the first guest page the copy got wrong, -1 for none. */
    record Result(PagingMode mode, DirtyTracking how, long bytesPerVcpu, double populateMs, double enableMs,
                  List<Iteration> rounds, double disableMs, long firstDifference) {
        boolean allReported() {
            return rounds.stream().allMatch(r -> r.missing() == 0);
        }

        boolean converged() {
            return firstDifference < 0;
        }
    }

    @Override
    public Integer call() throws Exception {
        PagingMode mode = Cli.pagingMode(paging);
        DirtyTracking how = Cli.tracking(method, mode);
        if (vcpus < 1 || vcpus > MAX_VCPUS) {
            throw new Cli.UsageException("--vcpus " + vcpus + " must be between 1 and " + MAX_VCPUS);
        }
        if (iterations < 1 || iterations > 1000) {
            throw new Cli.UsageException("--iterations " + iterations + " must be between 1 and 1000");
        }
        if (ringSize < 64 || ringSize > 65536 || Integer.bitCount(ringSize) != 1) {
            throw new Cli.UsageException("--ring-size " + ringSize + " must be a power of two from 64 to 65536");
        }
        long perVcpu = Units.parseSize("--memory", memory, MachineMemory.FRAME_SIZE, MAX_MEMORY_PER_VCPU);
        if ((perVcpu & MachineMemory.FRAME_OFFSET_MASK) != 0) {
            throw new Cli.UsageException("--memory " + memory + " must be a whole number of 4 KiB pages, from 4k to 1g");
        }
        String refusal = HostRam.shortfall(asked(), footprint(vcpus, perVcpu), HostRam.available(),
            "the guest, all of it touched, and the copy built from the harvests");
        if (refusal != null) {
            throw new Cli.UsageException(refusal);
        }
        Result result = run(mode, how, perVcpu);
        Cli.emit(spec.commandLine().getOut(), json, () -> json(result), () -> report(result));
        if (!result.allReported() || !result.converged()) {
            spec.commandLine().getErr().println("vmpage: dirty log lost writes: "
                + (result.allReported() ? "" : "a harvest missed pages written in its iteration; ")
                + (result.converged() ? "" : "the copy built from harvests differs from guest memory (first at guest page "
                    + Units.hex(result.firstDifference()) + ")"));
            return Cli.VERIFICATION_FAILED;
        }
        return Cli.OK;
    }

    /** The options that size the run, as the user typed them. */
    private String asked() {
        return "--vcpus " + vcpus + " --memory " + memory;
    }

    /** Guest memory: every vCPU's region and the guest kernel's. */
    static long guestBytes(int vcpus, long perVcpu) {
        return perVcpu * vcpus + KERNEL_BYTES;
    }

    /** Machine memory of the run's host: the guest, an eighth more for the engine's tables, 64 MiB. */
    static long hostBytes(long guestBytes) {
        return guestBytes + guestBytes / 8 + (64L << 20);
    }

    /**
     * Host RAM the run touches, approximately: all of guest memory (written, or populated by the bulk copy),
     * the copy beside it, the engine's tables (frame table 16 bytes per host frame, P2M and the vCPU
     * regions' frame list 8 each per guest frame, page tables about 8 each per guest frame) and 256 MiB
     * for the JVM.
     */
    static long footprint(int vcpus, long perVcpu) {
        long guest = guestBytes(vcpus, perVcpu);
        long guestFrames = guest >>> MachineMemory.FRAME_SHIFT;
        return 2 * guest + (hostBytes(guest) >>> MachineMemory.FRAME_SHIFT) * 16 + guestFrames * 32 + (256L << 20);
    }

    private Result run(PagingMode mode, DirtyTracking how, long perVcpu) throws Exception {
        int pages = (int) (perVcpu >>> MachineMemory.FRAME_SHIFT);
        long guestBytes = guestBytes(vcpus, perVcpu);
        try (Host host = Cli.createHost(hostBytes(guestBytes), asked())) {
            Vm vm = host.createVm(VmConfig.of(guestBytes).withPaging(mode).withVcpus(vcpus));
            try (GuestCopy copy = newCopy(vm)) {
                return run(host, vm, copy, mode, how, perVcpu, pages);
            }
        }
    }

    /** The copy the harvests build, allocated before the run starts (so a host without room fails first). */
    private GuestCopy newCopy(Vm vm) {
        try {
            return new GuestCopy(vm::readPhysical, vm.memorySize());
        } catch (NativeMemoryException e) {
            throw new Cli.UsageException(asked() + ": the copy of guest memory: " + e.getMessage());
        }
    }

    private Result run(Host host, Vm vm, GuestCopy copy, PagingMode mode, DirtyTracking how, long perVcpu, int pages)
        throws Exception {
        GuestKernel kernel = GuestKernel.boot(vm);
        Vcpu first = vm.vcpu(0);
        GuestKernel.AddressSpace space = kernel.createAddressSpace(first);
        first.run(() -> kernel.mmap(space, HEAP, perVcpu * vcpus, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE));
        for (Vcpu cpu : vm.vcpus()) {
            cpu.run(() -> kernel.switchTo(cpu, space));
        }
        double populateMs = writeAll(vm, pages, 0); // demand-zero faults: every vCPU populates its region
        long[][] gfns = new long[vcpus][pages];
        for (int v = 0; v < vcpus; v++) {
            Vcpu cpu = vm.vcpu(v);
            long base = HEAP + (long) v * pages * MachineMemory.FRAME_SIZE;
            long[] mine = gfns[v];
            cpu.run(() -> {
                for (int p = 0; p < pages; p++) {
                    long hpa = cpu.translate(base + (long) p * MachineMemory.FRAME_SIZE, Access.READ);
                    mine[p] = host.frames().guestFrame(hpa >>> MachineMemory.FRAME_SHIFT);
                }
            });
        }

        DirtyLog log = vm.dirtyLog();
        long t0 = System.nanoTime();
        log.enable(how, ringSize);
        double enableMs = (System.nanoTime() - t0) / 1e6;
        copy.copyAll(); // the bulk copy a migration starts with

        DirtySnapshot snapshot = new DirtySnapshot(vm.physicalMap().frames());
        List<Iteration> rounds = new ArrayList<>();
        for (int i = 1; i <= iterations; i++) {
            long logExits = vm.exits().get(ExitReason.DIRTY_LOG);
            long ringExits = vm.exits().get(ExitReason.DIRTY_RING_FULL);
            double dirtyMs = writeAll(vm, pages, i);
            long h0 = System.nanoTime();
            long reported = log.harvest(snapshot);
            double harvestMs = (System.nanoTime() - h0) / 1e6;
            long missing = 0;
            for (long[] mine : gfns) {
                for (long gfn : mine) {
                    missing += snapshot.isDirty(gfn) ? 0 : 1;
                }
            }
            snapshot.forEach(copy::copyPage);
            rounds.add(new Iteration(dirtyMs, harvestMs, reported, missing,
                vm.exits().get(ExitReason.DIRTY_LOG) - logExits, vm.exits().get(ExitReason.DIRTY_RING_FULL) - ringExits));
        }
        long d0 = System.nanoTime();
        log.disable();
        double disableMs = (System.nanoTime() - d0) / 1e6;
        log.harvest(snapshot); // what the last harvest could not see (none expected: the vCPUs are stopped)
        snapshot.forEach(copy::copyPage);
        return new Result(mode, how, perVcpu, populateMs, enableMs, rounds, disableMs, copy.firstDifference());
    }

    /** Every vCPU, on its own thread, writes one word into each page of its region; returns the wall time in ms. */
    private double writeAll(Vm vm, int pages, long iteration) throws Exception {
        AtomicReference<Throwable> failure = new AtomicReference<>();
        Thread[] threads = new Thread[vcpus];
        long start = System.nanoTime();
        for (int v = 0; v < vcpus; v++) {
            Vcpu cpu = vm.vcpu(v);
            long base = HEAP + (long) v * pages * MachineMemory.FRAME_SIZE;
            long value = (iteration << 32) | v;
            threads[v] = new Thread(() -> {
                try {
                    cpu.run(() -> {
                        for (int p = 0; p < pages; p++) {
                            cpu.writeLong(base + (long) p * MachineMemory.FRAME_SIZE + 8 * (iteration & 511), value + p);
                        }
                    });
                } catch (Throwable t) {
                    failure.compareAndSet(null, t);
                }
            }, "vcpu-" + v);
            threads[v].start();
        }
        for (Thread t : threads) {
            t.join();
        }
        if (failure.get() != null) {
            throw new IllegalStateException("a writer vCPU failed: " + failure.get(), failure.get());
        }
        return (System.nanoTime() - start) / 1e6;
    }

    private static String methodName(DirtyTracking how) {
        return how.name().toLowerCase(Locale.ROOT).replace('_', '-');
    }

    private String json(Result r) {
        ObjectNode root = JSON.createObjectNode();
        root.put("paging", Cli.pagingName(r.mode()));
        root.put("method", methodName(r.how()));
        root.put("vcpus", vcpus);
        root.put("bytes_per_vcpu", r.bytesPerVcpu());
        root.put("populate_ms", round(r.populateMs()));
        root.put("enable_ms", round(r.enableMs()));
        ArrayNode rounds = root.putArray("iterations");
        for (Iteration it : r.rounds()) {
            ObjectNode o = rounds.addObject();
            o.put("dirty_ms", round(it.dirtyMs()));
            o.put("harvest_ms", round(it.harvestMs()));
            o.put("pages_reported", it.reported());
            o.put("pages_missing", it.missing());
            o.put("dirty_log_exits", it.dirtyLogExits());
            o.put("ring_full_exits", it.ringFullExits());
        }
        root.put("disable_ms", round(r.disableMs()));
        root.put("all_reported", r.allReported());
        root.put("converged", r.converged());
        return root.toString();
    }

    private static double round(double ms) {
        return Math.round(ms * 1000) / 1000.0;
    }

    private String report(Result r) {
        StringBuilder b = new StringBuilder();
        b.append(String.format(Locale.ROOT, "dirty logging: %s paging, %s, %d vCPUs x %s, %d iterations%n%n",
            Cli.pagingName(r.mode()), methodName(r.how()), vcpus, memory, iterations));
        b.append(String.format(Locale.ROOT, "populate memory     %10.3f ms%n", r.populateMs()));
        b.append(String.format(Locale.ROOT, "enable logging      %10.3f ms   (one cold call: see DirtyLogBench for a measurement)%n",
            r.enableMs()));
        b.append(String.format(Locale.ROOT, "%n%9s %12s %12s %10s %9s %12s %10s%n",
            "iteration", "dirty (ms)", "harvest (ms)", "reported", "missing", "dirty exits", "ring full"));
        for (int i = 0; i < r.rounds().size(); i++) {
            Iteration it = r.rounds().get(i);
            b.append(String.format(Locale.ROOT, "%9d %12.3f %12.3f %10d %9d %12d %10d%n", i + 1, it.dirtyMs(), it.harvestMs(),
                it.reported(), it.missing(), it.dirtyLogExits(), it.ringFullExits()));
        }
        b.append(String.format(Locale.ROOT, "%ndisable logging     %10.3f ms%n", r.disableMs()));
        b.append("every page written was reported by its iteration's harvest: ").append(r.allReported() ? "yes" : "NO")
            .append(System.lineSeparator());
        b.append("the copy built from the harvests equals guest memory: ").append(r.converged() ? "yes" : "NO")
            .append(System.lineSeparator());
        return b.toString();
    }
}
