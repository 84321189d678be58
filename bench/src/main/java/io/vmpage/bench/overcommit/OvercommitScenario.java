package io.vmpage.bench.overcommit;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vm;
import io.vmpage.engine.policy.Reclaimer;
import io.vmpage.engine.sharing.PageSharingScanner;
import io.vmpage.engine.sharing.SharingConfig;
import io.vmpage.engine.sharing.SharingStats;
import io.vmpage.engine.swap.SwapDevice;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/**
 * The experiments of Waldspurger, "Memory Resource Management in VMware ESX Server" (OSDI 2002), run with
 * the engine's real mechanisms on a host whose VMs are promised more memory than it has. Every VM is a
 * {@link ScenarioGuest} (the guest kernel model, booted, touching its heap), admitted with a min and
 * shares; the host runs ESX's {@link Reclaimer} on a faster clock than ESX's 30 s ({@link #PERIOD_NANOS};
 * the paper's own experiments are minutes long), and for {@link #SHARING} the page-sharing scanner.
 * <ul>
 * <li>{@link #IDLE_TAX} (the paper's Figure 7): two VMs with equal shares and a min of 8 MiB on a 64 MiB
 *     host, each promised 48 MiB. {@code idle} boots first, touching 40 MiB, and then frees three quarters
 *     of it and does nothing; {@code active} boots a second later and writes its 40 MiB round and round.
 *     With tau = 0 memory is divided by shares alone and they end about even (the idle VM gives until it is
 *     no longer the larger: within one reclaim batch, plus the free reserve the faulting active VM takes); with ESX's 0.75 the
 *     idle VM's pages cost four times as much and the active one ends with clearly more.</li>
 * <li>{@link #SHARING} (Figure 4): N VMs booted one after another from the same image: half of each heap
 *     is the image (the same pages in every VM), a quarter zero, a quarter the VM's own. The scanner runs
 *     unthrottled (ESX's 200 pages/s would take minutes per VM); after each VM joined, the share of their
 *     pages that are shared and the memory saved are recorded: saving grows with N towards the image's
 *     share plus the zero pages.</li>
 * <li>{@link #BALLOON}: N VMs that touch their heaps and free three quarters of them, booted one after
 *     another at a guest's pace (a busy boot: sampling sees a booting guest active) onto a host that cannot
 *     hold them all: each drop into the soft state is met at once by ballooning the memory the booted
 *     guests freed, so free memory never falls to hard and nothing is swapped (as ESX prefers: ballooning
 *     first, paging where it cannot help). In all three paging modes.</li>
 * <li>{@link #SWAP}: the same, but guests whose whole memory is in use, so their balloons find nothing to
 *     give: free memory falls to the hard state, and the policy swaps pages out at random, mostly from the
 *     idle VM; the active one swaps back in what it touches.</li>
 * </ul>
 * In every scenario, at the end, every page the guests kept is read back through the guest and compared
 * with what they wrote.
 */
public enum OvercommitScenario {
    IDLE_TAX("idle-tax", 2, 15),
    SHARING("sharing", 4, 16),
    BALLOON("balloon", 3, 12),
    SWAP("swap", 2, 12);

    private static final long MIB = 1L << 20;
    /** The reclaimer's period (and working-set sampling period): ESX's is 30 s; 250 ms lets a scenario run in seconds. */
    static final long PERIOD_NANOS = 250_000_000L;
    /** Pages the reclaimer reclaims (or hands back) per period: 4 MiB, 16 MiB/s. */
    static final long BATCH_PAGES = 1024;
    /** How often the VMs' allocations are sampled for the timeline. */
    static final long SAMPLE_NANOS = 100_000_000L;
    /** A guest's boot pace in the balloon and swap scenarios: 16 MiB/s of touched memory. */
    private static final long BOOT_PAGES_PER_SECOND = 4096;

    /** The name on the command line. */
    public final String cliName;
    /** VMs when the user names no number. */
    public final int defaultVms;
    /** Run time in seconds when the user names none. */
    public final int defaultSeconds;

    OvercommitScenario(String cliName, int defaultVms, int defaultSeconds) {
        this.cliName = cliName;
        this.defaultVms = defaultVms;
        this.defaultSeconds = defaultSeconds;
    }

    /** The scenario named {@code name} on the command line, or null. */
    public static OvercommitScenario named(String name) {
        for (OvercommitScenario s : values()) {
            if (s.cliName.equals(name)) {
                return s;
            }
        }
        return null;
    }

    /** The VMs it can run with (idle-tax: exactly two, idle and active). */
    public int minVms() {
        return this == SHARING ? 1 : 2;
    }

    public int maxVms() {
        return this == IDLE_TAX ? 2 : this == SHARING ? 16 : 8;
    }

    /**
     * Why the scenario cannot run its VMs under {@code paging}, or null when it can. Under paravirtual
     * paging the host can neither sample, swap nor share a guest's memory (Xen does none of them for PV
     * guests: its tables name machine frames), so only the balloon scenario runs there.
     */
    public String pagingRefusal(PagingMode paging) {
        if (paging != PagingMode.PARAVIRTUAL || this == BALLOON) {
            return null;
        }
        return "the " + cliName + " scenario needs nested or shadow paging: a paravirtual guest's memory cannot be "
            + switch (this) {
                case SHARING -> "shared (Xen does not share PV memory)";
                case SWAP -> "swapped by the host (Xen does not swap PV guests)";
                default -> "sampled for its working set, so the idle memory tax cannot see it";
            };
    }

    /** Machine memory the scenario's host has for {@code vms} VMs. */
    public long hostBytes(int vms) {
        return switch (this) {
            case IDLE_TAX -> 64 * MIB;
            case SHARING -> vms * 36 * MIB + 16 * MIB; // room for all: sharing alone is measured
            case BALLOON -> vms * 20 * MIB; // each touches ~25 MiB at boot
            case SWAP -> vms * 24 * MIB; // each touches ~31 MiB and keeps it
        };
    }

    /**
     * Runs the scenario: {@code vms} VMs in paging mode {@code paging}, tax rate {@code tau}, for {@code durationNanos}; {@code progress}
     * gets a line about once a second. The swap file goes into {@code swapDir} and is deleted afterwards.
     */
    public OvercommitResult run(int vms, PagingMode paging, double tau, long durationNanos, long seed, Path swapDir,
                                Consumer<String> progress) throws IOException, InterruptedException {
        String refusal = pagingRefusal(paging);
        if (refusal != null) {
            throw new IllegalArgumentException(refusal);
        }
        if (vms < minVms() || vms > maxVms()) {
            throw new IllegalArgumentException("the " + cliName + " scenario runs " + (minVms() == maxVms() ? minVms()
                : minVms() + " to " + maxVms()) + " VMs, not " + vms);
        }
        List<ScenarioGuest.Spec> specs = specs(vms, durationNanos);
        long hostBytes = hostBytes(vms);
        Path swapFile = Files.createTempFile(swapDir, "vmpage-overcommit-", ".swap");
        List<ScenarioGuest> guests = new ArrayList<>();
        try (Host host = Host.create(hostBytes)) {
            try {
                long swapSlots = specs.stream().mapToLong(s -> s.memoryBytes() - s.minBytes()).sum() / 4096 + 4096;
                host.attachSwap(SwapDevice.create(swapFile, swapSlots));
                for (int i = 0; i < specs.size(); i++) {
                    guests.add(new ScenarioGuest(host, specs.get(i), paging, seed * 31 + i));
                    if (this == SHARING) { // one tenant: VMs share only within a domain (ESX's salting), zero pages across all
                        guests.get(i).vm().setSharingDomain("image");
                    }
                }
                Reclaimer reclaimer = this == SHARING ? null
                    : host.startReclaimer(new Reclaimer.Config(PERIOD_NANOS, tau, 100, BATCH_PAGES, seed));
                PageSharingScanner scanner = this == SHARING ? host.startPageSharing(SharingConfig.unlimited().withSeed(seed)) : null;
                Sampler sampler = new Sampler(host, guests, reclaimer);
                long start = System.nanoTime();
                for (ScenarioGuest g : guests) {
                    g.start(start);
                }
                List<OvercommitResult.SharingStep> steps = new ArrayList<>();
                long nextSample = start;
                long nextProgress = start + 1_000_000_000L;
                int stepsTaken = 0;
                while (true) {
                    long now = System.nanoTime();
                    if (now - start >= durationNanos) {
                        break;
                    }
                    if (now - nextSample >= 0) {
                        sampler.sample(now - start);
                        nextSample += SAMPLE_NANOS;
                    }
                    if (scanner != null && stepsTaken < vms && now - start >= (stepsTaken + 1) * durationNanos / vms - SAMPLE_NANOS) {
                        steps.add(sharingStep(stepsTaken + 1, guests, scanner.stats()));
                        stepsTaken++;
                    }
                    if (now - nextProgress >= 0) {
                        progress.accept(sampler.line(now - start));
                        nextProgress += 1_000_000_000L;
                    }
                    failFast(guests);
                    TimeUnit.MILLISECONDS.sleep(5);
                }
                sampler.sample(System.nanoTime() - start);
                for (ScenarioGuest g : guests) {
                    g.stop();
                }
                if (scanner != null) {
                    while (steps.size() < vms) {
                        steps.add(sharingStep(steps.size() + 1, guests, scanner.stats()));
                    }
                    host.stopPageSharing();
                }
                List<OvercommitResult.VmResult> results = new ArrayList<>();
                for (int i = 0; i < guests.size(); i++) {
                    ScenarioGuest g = guests.get(i);
                    Vm vm = g.vm();
                    results.add(new OvercommitResult.VmResult(g.spec().name(), g.spec().shares(), g.spec().minBytes(),
                        g.spec().memoryBytes(), g.spec().active(), vm.populatedFrames() << 12, vm.sharedFrames() << 12,
                        vm.balloon().bytes(), vm.swappedFrames() << 12, g.stalls(), g.writes(),
                        reclaimer == null ? Double.NaN : reclaimer.activeEstimate(vm), sampler.timeline(i)));
                }
                OvercommitResult.ReclaimerTotals totals = reclaimer == null ? null : new OvercommitResult.ReclaimerTotals(
                    reclaimer.periods(), reclaimer.balloonedPages(),
                    guests.stream().mapToLong(g -> g.vm().balloon().framesFreed()).sum(), reclaimer.swappedPages(),
                    reclaimer.state().name().toLowerCase(java.util.Locale.ROOT));
                long verified = 0;
                long wrong = 0;
                for (ScenarioGuest g : guests) { // the reclaimer still runs: it makes room for what comes back from swap
                    verified += g.spec().keptPages();
                    wrong += g.verify();
                }
                host.stopReclaimer();
                long errors = host.agentErrors();
                long elapsed = System.nanoTime() - start;
                for (ScenarioGuest g : guests) {
                    g.close();
                }
                return new OvercommitResult(this, paging, tau, hostBytes, elapsed, results, sampler.hostTimeline(), totals, steps, verified,
                    wrong, errors);
            } finally {
                for (ScenarioGuest g : guests) { // on a failure too: no driver may touch a VM after its host closed
                    g.halt();
                }
            }
        } finally {
            Files.deleteIfExists(swapFile);
        }
    }

    private static void failFast(List<ScenarioGuest> guests) {
        for (ScenarioGuest g : guests) {
            if (g.failure() != null) {
                throw new IllegalStateException("guest " + g.spec().name() + " failed: " + g.failure(), g.failure());
            }
        }
    }

    private static OvercommitResult.SharingStep sharingStep(int vms, List<ScenarioGuest> guests, SharingStats stats) {
        long pages = 0;
        long shared = 0;
        for (ScenarioGuest g : guests.subList(0, vms)) {
            long s = g.vm().sharedFrames();
            shared += s;
            pages += s + g.vm().populatedFrames();
        }
        return new OvercommitResult.SharingStep(vms, pages, shared, stats.bytesSaved());
    }

    /** The VMs of this scenario. */
    private List<ScenarioGuest.Spec> specs(int vms, long durationNanos) {
        List<ScenarioGuest.Spec> specs = new ArrayList<>();
        switch (this) {
            case IDLE_TAX -> {
                specs.add(new ScenarioGuest.Spec("idle", 48 * MIB, 8 * MIB, 1000, false, 10_240, 2_560, 0, 0, 0, 0, 0, false));
                specs.add(new ScenarioGuest.Spec("active", 48 * MIB, 8 * MIB, 1000, true, 10_240, 10_240, 0, 0, BOOT_PAGES_PER_SECOND / 2,
                    0, 1_000_000_000L, false));
            }
            case SHARING -> {
                long slot = durationNanos / vms;
                for (int i = 0; i < vms; i++) { // min = max: nothing reclaimed, no swap reserved
                    specs.add(new ScenarioGuest.Spec("vm" + (i + 1), 32 * MIB, 32 * MIB, 1000, false, 6_144, 6_144, 3_072, 1_536, 0,
                        0x1A6E, i * slot, false));
                }
            }
            case BALLOON -> {
                for (int i = 0; i < vms; i++) {
                    specs.add(new ScenarioGuest.Spec("vm" + (i + 1), 32 * MIB, 4 * MIB, 1000, false, 6_144, 1_536, 0, 0,
                        BOOT_PAGES_PER_SECOND / 2, 0, i * 1_500_000_000L, true)); // booting slower than balloons give back
                }
            }
            case SWAP -> {
                for (int i = 0; i < vms; i++) { // the heap is all the guest's free memory: nothing for a balloon
                    specs.add(new ScenarioGuest.Spec(i == vms - 1 ? "active" : "idle" + (vms == 2 ? "" : "" + (i + 1)), 32 * MIB,
                        4 * MIB, 1000, i == vms - 1, 7_900, 7_900, 0, 0, BOOT_PAGES_PER_SECOND, 0, i * 1_500_000_000L, false));
                }
            }
        }
        return specs;
    }

    /** The timeline: each VM's allocation and the host's free memory, every {@link #SAMPLE_NANOS}. Scenario thread. */
    private static final class Sampler {
        private final Host host;
        private final List<ScenarioGuest> guests;
        private final Reclaimer reclaimer;
        private final List<List<OvercommitResult.Point>> points = new ArrayList<>();
        private final List<OvercommitResult.HostPoint> hostPoints = new ArrayList<>();

        Sampler(Host host, List<ScenarioGuest> guests, Reclaimer reclaimer) {
            this.host = host;
            this.guests = guests;
            this.reclaimer = reclaimer;
            for (int i = 0; i < guests.size(); i++) {
                points.add(new ArrayList<>());
            }
        }

        void sample(long elapsedNanos) {
            long t = elapsedNanos / 1_000_000;
            for (int i = 0; i < guests.size(); i++) {
                points.get(i).add(new OvercommitResult.Point(t, guests.get(i).vm().populatedFrames() << 12));
            }
            hostPoints.add(new OvercommitResult.HostPoint(t, host.frames().freeFrames() << 12, state()));
        }

        private String state() {
            return reclaimer == null ? "none" : reclaimer.state().name().toLowerCase(java.util.Locale.ROOT);
        }

        List<OvercommitResult.Point> timeline(int vm) {
            return List.copyOf(points.get(vm));
        }

        List<OvercommitResult.HostPoint> hostTimeline() {
            return List.copyOf(hostPoints);
        }

        String line(long elapsedNanos) {
            StringBuilder b = new StringBuilder(String.format(java.util.Locale.ROOT, "%5.1f s  %-4s free %5.1f MiB", elapsedNanos / 1e9,
                state(), (host.frames().freeFrames() << 12) / (double) MIB));
            for (ScenarioGuest g : guests) {
                Vm vm = g.vm();
                b.append(String.format(java.util.Locale.ROOT, " | %s %.1f MiB", g.spec().name(), (vm.populatedFrames() << 12) / (double) MIB));
                long balloon = vm.balloon().bytes();
                long swapped = vm.swappedFrames() << 12;
                if (balloon > 0) {
                    b.append(String.format(java.util.Locale.ROOT, ", balloon %.1f", balloon / (double) MIB));
                }
                if (swapped > 0) {
                    b.append(String.format(java.util.Locale.ROOT, ", swap %.1f", swapped / (double) MIB));
                }
                if (!g.booted()) {
                    b.append(" (booting)");
                }
            }
            return b.toString();
        }
    }
}
