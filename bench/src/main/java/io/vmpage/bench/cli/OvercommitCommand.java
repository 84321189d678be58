package io.vmpage.bench.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.vmpage.bench.overcommit.OvercommitResult;
import io.vmpage.bench.overcommit.OvercommitScenario;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code vmpage overcommit}: the experiments of Waldspurger's ESX paper (OSDI 2002) on a host whose VMs
 * are promised more memory than it has ({@link OvercommitScenario}): the idle memory tax (Figure 7),
 * content-based page sharing as VMs are added (Figure 4), reclamation by ballooning and by host swap.
 * One progress line a second; a report (or {@code --json}) at the end; {@code --plot} draws each VM's
 * allocation over time. Exit 0 when every page the guests kept is intact and no host agent failed, 1
 * otherwise, 2 for bad flags.
 */
@Command(name = "overcommit", mixinStandardHelpOptions = true,
    description = "Runs an ESX memory-overcommit experiment (idle memory tax, page sharing, ballooning, host swap) and reports each VM's memory.")
public final class OvercommitCommand implements Callable<Integer> {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final double MIB = 1 << 20;

    @Spec
    CommandSpec spec;

    @Option(names = "--scenario", paramLabel = "NAME", required = true,
        description = "idle-tax (two VMs, equal shares, one idle, one active), sharing (VMs booted from one image, added one"
            + " by one), balloon (reclaiming what guests freed) or swap (guests with all their memory in use).")
    String scenario;

    @Option(names = "--paging", paramLabel = "MODE", defaultValue = "nested",
        description = "The VMs' paging mode: nested, shadow or pv (pv: the balloon scenario only, since the host can"
            + " neither sample, swap nor share a PV guest's memory). Default: ${DEFAULT-VALUE}.")
    String paging;

    @Option(names = "--tau", paramLabel = "T", defaultValue = "0.75",
        description = "The idle memory tax rate, 0 to below 1 (ESX's default 0.75: an idle page costs 4 times an active one;"
            + " 0: shares alone). Default: ${DEFAULT-VALUE}.")
    String tau;

    @Option(names = "--vms", paramLabel = "N",
        description = "VMs: idle-tax 2 (only), sharing 1 to 16 (default 4), balloon and swap 2 to 8 (default 3 and 2).")
    Integer vms;

    @Option(names = "--duration", paramLabel = "DURATION",
        description = "How long it runs, 2s to 10m (default: idle-tax 15s, sharing 16s, balloon and swap 12s).")
    String duration;

    @Option(names = "--seed", paramLabel = "N", defaultValue = "1",
        description = "Seed of the reclaimer's samples and swap victims, the scanner and the guests' pages. Default: ${DEFAULT-VALUE}.")
    long seed;

    @Option(names = "--json", arity = "0..1", fallbackValue = "-", paramLabel = "FILE",
        description = "Write the result as one JSON object to FILE, or to stdout when FILE is omitted or '-'.")
    String json;

    @Option(names = "--plot", paramLabel = "FILE.png", description = "Write a PNG chart of each VM's allocation over time to FILE.png.")
    String plot;

    @Override
    public Integer call() throws Exception {
        OvercommitScenario s = OvercommitScenario.named(scenario);
        if (s == null) {
            throw new Cli.UsageException("--scenario " + scenario + " must be idle-tax, sharing, balloon or swap");
        }
        io.vmpage.engine.PagingMode mode = Cli.pagingMode(paging);
        String refusal = s.pagingRefusal(mode);
        if (refusal != null) {
            throw new Cli.UsageException("--paging " + paging + ": " + refusal);
        }
        double taxRate;
        try {
            taxRate = Double.parseDouble(tau.strip());
        } catch (NumberFormatException e) {
            throw new Cli.UsageException("--tau " + tau + " must be a number from 0 to below 1");
        }
        if (!(taxRate >= 0 && taxRate < 1)) {
            throw new Cli.UsageException("--tau " + tau + " must be a number from 0 to below 1");
        }
        int n = vms == null ? s.defaultVms : vms;
        if (n < s.minVms() || n > s.maxVms()) {
            throw new Cli.UsageException("--vms " + n + ": the " + s.cliName + " scenario runs "
                + (s.minVms() == s.maxVms() ? "exactly " + s.minVms() : s.minVms() + " to " + s.maxVms()) + " VMs");
        }
        long nanos;
        if (duration == null) {
            nanos = s.defaultSeconds * 1_000_000_000L;
        } else {
            try {
                nanos = Units.parseDurationNanos(duration);
            } catch (IllegalArgumentException e) {
                throw new Cli.UsageException("--duration " + duration + ": " + e.getMessage());
            }
            if (nanos < 2_000_000_000L || nanos > 600_000_000_000L) {
                throw new Cli.UsageException("--duration " + duration + " must be between 2s and 10m");
            }
        }
        Path plotFile = plot == null ? null : Cli.plotFile(plot);
        String ramShort = HostRam.shortfall("--scenario " + scenario + " --vms " + n, s.hostBytes(n) * 2 + (256L << 20),
            HostRam.available(), "the scenario's host and its swap file");
        if (ramShort != null) {
            throw new Cli.UsageException(ramShort);
        }
        PrintWriter out = spec.commandLine().getOut();
        PrintWriter progress = json != null && json.equals("-") ? spec.commandLine().getErr() : out;
        progress.printf(Locale.ROOT, "%s: %d VMs (%s paging) on a %.0f MiB host for %.0f s%s%n", s.cliName, n, paging,
            s.hostBytes(n) / MIB, nanos / 1e9,
            s == OvercommitScenario.SHARING ? ", page sharing unthrottled" : String.format(Locale.ROOT, ", idle memory tax %.2f", taxRate));
        progress.flush();
        OvercommitResult result = s.run(n, mode, taxRate, nanos, seed, Path.of(System.getProperty("java.io.tmpdir")), line -> {
            progress.println(line);
            progress.flush();
        });
        if (plotFile != null) {
            try {
                OvercommitPlot.write(result, plotFile);
            } catch (IOException | RuntimeException e) {
                throw new Cli.UsageException("cannot write " + plot + ": " + e.getMessage());
            }
        }
        Cli.emit(out, json, () -> json(result), () -> text(result));
        if (!result.verified()) {
            spec.commandLine().getErr().println("vmpage: overcommit lost data: " + result.mismatchedPages() + " of "
                + result.verifiedPages() + " kept guest pages differ from what the guest wrote; " + result.agentErrors()
                + " host agent errors");
            return Cli.VERIFICATION_FAILED;
        }
        return Cli.OK;
    }

    private static String json(OvercommitResult r) {
        ObjectNode o = JSON.createObjectNode();
        o.put("scenario", r.scenario().cliName);
        o.put("paging", Cli.pagingName(r.paging()));
        o.put("tau", r.tau());
        o.put("host_bytes", r.hostBytes());
        o.put("duration_ms", r.durationNanos() / 1_000_000);
        ArrayNode vms = o.putArray("vms");
        for (OvercommitResult.VmResult v : r.vms()) {
            ObjectNode n = vms.addObject();
            n.put("name", v.name());
            n.put("shares", v.shares());
            n.put("active", v.active());
            n.put("min_bytes", v.minBytes());
            n.put("memory_bytes", v.memoryBytes());
            n.put("allocated_bytes", v.allocatedBytes());
            n.put("shared_bytes", v.sharedBytes());
            n.put("ballooned_bytes", v.balloonedBytes());
            n.put("swapped_bytes", v.swappedBytes());
            if (!Double.isNaN(v.activeEstimate())) {
                n.put("active_estimate", v.activeEstimate());
            }
            n.put("stalls", v.stalls());
            n.put("writes", v.writes());
            ArrayNode t = n.putArray("timeline");
            for (OvercommitResult.Point p : v.timeline()) {
                t.addObject().put("t_ms", p.tMs()).put("allocated_bytes", p.allocatedBytes());
            }
        }
        ArrayNode host = o.putArray("host_timeline");
        for (OvercommitResult.HostPoint p : r.host()) {
            host.addObject().put("t_ms", p.tMs()).put("free_bytes", p.freeBytes()).put("state", p.state());
        }
        if (r.reclaimer() != null) {
            ObjectNode rec = o.putObject("reclaimer");
            rec.put("periods", r.reclaimer().periods());
            rec.put("balloon_pages_asked", r.reclaimer().balloonPagesAsked());
            rec.put("balloon_frames_freed", r.reclaimer().balloonFramesFreed());
            rec.put("swapped_pages", r.reclaimer().swappedPages());
            rec.put("final_state", r.reclaimer().finalState());
        }
        if (!r.sharingSteps().isEmpty()) {
            ArrayNode steps = o.putArray("sharing");
            for (OvercommitResult.SharingStep st : r.sharingSteps()) {
                steps.addObject().put("vms", st.vms()).put("guest_pages", st.guestPages()).put("shared_pages", st.sharedPages())
                    .put("shared_fraction", st.sharedFraction()).put("saved_bytes", st.savedBytes())
                    .put("saved_fraction", st.savedFraction());
            }
        }
        o.put("verified_pages", r.verifiedPages());
        o.put("mismatched_pages", r.mismatchedPages());
        o.put("agent_errors", r.agentErrors());
        return o.toString();
    }

    private static String text(OvercommitResult r) {
        StringBuilder b = new StringBuilder();
        b.append(String.format(Locale.ROOT, "%n%s after %.1f s on a %.0f MiB host:%n", r.scenario().cliName, r.durationNanos() / 1e9,
            r.hostBytes() / MIB));
        for (OvercommitResult.VmResult v : r.vms()) {
            b.append(String.format(Locale.ROOT, "  %-8s %s, shares %d, min %.0f MiB of %.0f MiB: allocated %.1f MiB, shared %.1f MiB,"
                    + " ballooned %.1f MiB, swapped %.1f MiB%s; %d stalls waiting for memory%n", v.name(), v.active() ? "active" : "idle",
                v.shares(), v.minBytes() / MIB, v.memoryBytes() / MIB, v.allocatedBytes() / MIB, v.sharedBytes() / MIB,
                v.balloonedBytes() / MIB, v.swappedBytes() / MIB,
                Double.isNaN(v.activeEstimate()) ? "" : String.format(Locale.ROOT, ", active fraction estimated %.2f", v.activeEstimate()),
                v.stalls()));
        }
        if (r.reclaimer() != null) {
            b.append(String.format(Locale.ROOT, "  reclaimer: %d periods, asked balloons for %.1f MiB (they freed %.1f MiB), swapped out"
                    + " %.1f MiB; state at the end: %s%n", r.reclaimer().periods(), r.reclaimer().balloonPagesAsked() * 4096 / MIB,
                r.reclaimer().balloonFramesFreed() * 4096 / MIB, r.reclaimer().swappedPages() * 4096 / MIB, r.reclaimer().finalState()));
        }
        for (OvercommitResult.SharingStep st : r.sharingSteps()) {
            b.append(String.format(Locale.ROOT, "  %2d VM%s: %5.1f%% of their pages shared, %.1f MiB saved (%.1f%% of their memory)%n",
                st.vms(), st.vms() == 1 ? " " : "s", 100 * st.sharedFraction(), st.savedBytes() / MIB, 100 * st.savedFraction()));
        }
        b.append(String.format(Locale.ROOT, "  %d kept guest pages read back: %d differ; %d host agent errors%n", r.verifiedPages(),
            r.mismatchedPages(), r.agentErrors()));
        return b.toString();
    }
}
