package io.vmpage.bench.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.vmpage.engine.ExitReason;
import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.guest.GuestKernel;
import io.vmpage.engine.guest.GuestProgram;
import io.vmpage.mmu.MmuStats;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code vmpage modes}: one guest workload under each paging mode, side by side. The same seeded guest
 * program runs on a fresh host per mode (after a warm-up run); only its operations are measured, after
 * boot and after the program's initial mappings are populated (exits are counted over the same span).
 * The runs must observe the same guest (exit 1 otherwise). Reports guest operations per second, exits by reason, the TLB hit rate and
 * paging-structure references per walk, which shows the classic trade-off: shadow paging pays on
 * page-table updates and context switches (exits), nested paging on TLB misses (2D walks).
 */
@Command(name = "modes", mixinStandardHelpOptions = true,
    description = "Runs a guest workload under nested, shadow and paravirtual paging and compares them.")
public final class ModesCommand implements Callable<Integer> {
    private static final ObjectMapper JSON = new ObjectMapper();
    static final long MIN_MEMORY = 16L << 20;
    /**
     * Largest guest: each run's host is twice the guest plus 64 MiB, which must stay well inside the frame
     * table's 2^28 frames (1 TiB) and whose frame table is direct buffers of 16 bytes per host frame.
     */
    static final long MAX_MEMORY = 256L << 30;

    @Spec
    CommandSpec spec;

    @Option(names = "--workload", paramLabel = "NAME", defaultValue = "mixed",
        description = "churn (page-table updates, context switches), tlb (large working set), mixed. Default: ${DEFAULT-VALUE}.")
    String workload;

    @Option(names = "--ops", paramLabel = "N", defaultValue = "100000", description = "Guest operations per run. Default: ${DEFAULT-VALUE}.")
    int operations;

    @Option(names = "--memory", paramLabel = "SIZE", defaultValue = "64m",
        description = "Guest memory, 16m to 256g in whole 4 KiB pages (each run's host has twice as much, plus 64m)."
            + " Default: ${DEFAULT-VALUE}.")
    String memory;

    @Option(names = "--seed", paramLabel = "N", defaultValue = "1", description = "Seed of the guest program. Default: ${DEFAULT-VALUE}.")
    long seed;

    @Option(names = "--json", arity = "0..1", fallbackValue = "-", paramLabel = "FILE",
        description = "Write the result as one JSON object to FILE, or to stdout when FILE is omitted or '-'.")
    String json;

    /** One mode's measured run. */
    record ModeResult(PagingMode mode, double opsPerSecond, Map<ExitReason, Long> exits, double tlbHitRate,
                      double walkRefsPerMiss, long[] trace) {
    }

    @Override
    public Integer call() {
        GuestProgram.Mix mix = GuestProgram.Mix.named(workload);
        if (operations <= 0) {
            throw new Cli.UsageException("--ops " + operations + " must be positive");
        }
        long guestBytes = Units.parseSize("--memory", memory, MIN_MEMORY, MAX_MEMORY);
        if ((guestBytes & 0xFFF) != 0) {
            throw new Cli.UsageException("--memory " + memory + " must be a whole number of 4 KiB pages");
        }
        List<ModeResult> results = new ArrayList<>();
        for (PagingMode mode : PagingMode.values()) {
            run(mode, mix, guestBytes, Math.max(1, operations / 4)); // warm-up: JIT and caches
            results.add(run(mode, mix, guestBytes, operations));
        }
        String mismatch = null;
        for (ModeResult r : results.subList(1, results.size())) {
            if (!Arrays.equals(results.get(0).trace(), r.trace())) {
                mismatch = Cli.pagingName(r.mode()) + " observed a different guest than " + Cli.pagingName(results.get(0).mode());
            }
        }
        Cli.emit(spec.commandLine().getOut(), json, () -> json(mix, results), () -> report(mix, results));
        if (mismatch != null) {
            spec.commandLine().getErr().println("vmpage: " + mismatch);
            return Cli.VERIFICATION_FAILED;
        }
        return Cli.OK;
    }

    private ModeResult run(PagingMode mode, GuestProgram.Mix mix, long guestBytes, int ops) {
        try (Host host = Cli.createHost(guestBytes * 2 + (64L << 20), "--memory " + memory)) {
            Vm vm = host.createVm(VmConfig.of(guestBytes).withPaging(mode));
            GuestKernel kernel = GuestKernel.boot(vm);
            GuestProgram program = new GuestProgram(kernel, mix, seed).prepare();
            MmuStats stats = vm.vcpu(0).mmu().stats();
            stats.reset();
            Map<ExitReason, Long> before = vm.exits();
            long start = System.nanoTime();
            GuestProgram.Trace trace = program.run(ops);
            double seconds = (System.nanoTime() - start) / 1e9;
            Map<ExitReason, Long> exits = new java.util.EnumMap<>(ExitReason.class);
            vm.exits().forEach((reason, count) -> exits.put(reason, count - before.get(reason)));
            return new ModeResult(mode, ops / seconds, exits, stats.tlbHitRate(), stats.refsPerWalk(), trace.values());
        }
    }

    private String json(GuestProgram.Mix mix, List<ModeResult> results) {
        ObjectNode root = JSON.createObjectNode();
        root.put("workload", mix.name());
        ArrayNode modes = root.putArray("modes");
        for (ModeResult r : results) {
            ObjectNode m = modes.addObject();
            m.put("paging", Cli.pagingName(r.mode()));
            m.put("ops_per_sec", Math.round(r.opsPerSecond()));
            ObjectNode exits = m.putObject("exits");
            r.exits().forEach((reason, count) -> exits.put(reason.name().toLowerCase(Locale.ROOT), count));
            m.put("tlb_hit_rate", Math.round(r.tlbHitRate() * 10000) / 10000.0);
            m.put("walk_refs_per_miss", Math.round(r.walkRefsPerMiss() * 100) / 100.0);
        }
        return root.toString();
    }

    private String report(GuestProgram.Mix mix, List<ModeResult> results) {
        StringBuilder b = new StringBuilder();
        b.append(String.format(Locale.ROOT, "workload %s: %d guest operations, seed %d, %s of guest memory%n%n",
            mix.name(), operations, seed, memory));
        b.append(String.format(Locale.ROOT, "%-8s %12s %10s %14s  %s%n", "paging", "ops/s", "TLB hits", "refs per walk", "exits"));
        for (ModeResult r : results) {
            StringBuilder exits = new StringBuilder();
            r.exits().forEach((reason, count) -> {
                if (count > 0) {
                    exits.append(reason.name().toLowerCase(Locale.ROOT)).append('=').append(count).append(' ');
                }
            });
            b.append(String.format(Locale.ROOT, "%-8s %12.0f %9.1f%% %14.2f  %s%n", Cli.pagingName(r.mode()), r.opsPerSecond(),
                r.tlbHitRate() * 100, r.walkRefsPerMiss(), exits.length() == 0 ? "-" : exits.toString().trim()));
        }
        if (results.size() > 1) {
            b.append(System.lineSeparator()).append("every mode observed the same guest: ")
                .append(results.stream().allMatch(r -> Arrays.equals(r.trace(), results.get(0).trace())) ? "yes" : "NO")
                .append(System.lineSeparator());
        }
        return b.toString();
    }
}
