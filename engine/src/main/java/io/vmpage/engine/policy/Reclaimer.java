package io.vmpage.engine.policy;

import io.vmpage.engine.Host;
import io.vmpage.engine.Vm;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.agrona.concurrent.Agent;

/**
 * ESX's dynamic reallocation (Waldspurger, OSDI 2002, section 6.2) as an Agrona agent: once per period it
 * ends and restarts each admitted VM's working-set sample ({@link WorkingSetSampler}), updates the host's
 * {@link FreeMemoryState} from the free frames, and, below the high state, reclaims a batch of pages from
 * the VM with the fewest shares per page under the idle memory tax ({@link IdleMemoryTax#victim}), never
 * below its min: in the soft state by raising its balloon target (its guest's driver gives the pages
 * back), in the hard and low states by swapping pages out at random. In the low state every VM above its
 * target (its allocation minus what is being reclaimed from it) is paused until the state rises again.
 * Back in the high state it lowers balloon targets a batch at a time, so VMs may grow again.
 *
 * <p>A paravirtual VM is neither sampled nor swapped (the host cannot take a mapping or a frame from a
 * PV guest behind its back: Xen swaps and samples only HVM guests' memory), so it counts as fully
 * active and gives memory by its balloon alone, in every state below high, as Xen's memory managers
 * ({@code xenballoond}, {@code squeezed}) reclaim it.
 *
 * <p>Only VMs admitted by {@link Host#admitVm} take part (they carry min and shares). One thread runs it
 * ({@code doWork} is not reentrant); {@link #state} and the counters may be read from any thread.
 */
public final class Reclaimer implements Agent {
    /**
     * @param periodNanos how often it samples and reclaims (ESX samples every 30 s; experiments run faster)
     * @param tau the idle memory tax rate, in [0, 1)
     * @param samples pages sampled per VM per period
     * @param batchPages pages reclaimed (or handed back) per period
     * @param seed seed of the samples and of the swap victims
     */
    public record Config(long periodNanos, double tau, int samples, long batchPages, long seed) {
        public Config {
            if (periodNanos <= 0 || samples < 1 || batchPages < 1) {
                throw new IllegalArgumentException("a reclaimer needs a positive period, sample size and batch: "
                    + periodNanos + " ns, " + samples + " samples, " + batchPages + " pages");
            }
            IdleMemoryTax.sharesPerPage(1, 1, 1, tau); // checks tau
        }

        /** ESX's defaults: 30 s periods, tau 0.75, 100 samples; a batch of 256 pages (1 MiB). */
        public static Config esx() {
            return new Config(30_000_000_000L, IdleMemoryTax.ESX_TAU, WorkingSetSampler.ESX_SAMPLES, 256, 0);
        }
    }

    private final Host host;
    private final Config config;
    private final SplittableRandom random;
    private final Map<Vm, WorkingSetSampler> samplers = new IdentityHashMap<>();
    private final List<Vm> blocked = new ArrayList<>();
    private long nextPeriod = System.nanoTime();
    /** Written by the agent thread, read by anyone. */
    private volatile FreeMemoryState state = FreeMemoryState.HIGH;
    private volatile long balloonedPages;
    private volatile long swappedPages;
    private volatile long periods;

    public Reclaimer(Host host, Config config) {
        this.host = host;
        this.config = config;
        this.random = new SplittableRandom(config.seed());
    }

    @Override
    public String roleName() {
        return "memory-reclaimer";
    }

    @Override
    public int doWork() {
        long now = System.nanoTime();
        if (now - nextPeriod < 0) {
            return 0;
        }
        nextPeriod = now + config.periodNanos();
        period();
        return 1;
    }

    /** One period's work (what {@link #doWork} does when a period is due); callable directly by a driver of its own. */
    public void period() {
        List<Vm> vms = new ArrayList<>();
        for (Vm vm : host.vms()) {
            if (vm.allocation() != null && !vm.destroyed()) {
                vms.add(vm);
            }
        }
        samplers.keySet().retainAll(new java.util.HashSet<>(vms));
        for (Vm vm : vms) {
            if (byBalloonOnly(vm)) {
                continue;
            }
            WorkingSetSampler s = samplers.computeIfAbsent(vm, v -> new WorkingSetSampler(v, config.samples(), random.nextLong()));
            s.endPeriod();
            s.startPeriod();
        }
        long frames = host.frames().frames();
        state = state.next((double) host.frames().freeFrames() / frames);
        if (state == FreeMemoryState.HIGH) {
            for (Vm vm : vms) { // plenty: let the VMs grow back
                long target = vm.balloon().target();
                if (target > 0) {
                    vm.balloon().setTarget(Math.max(0, target - config.batchPages()));
                }
            }
        } else {
            reclaim(vms);
        }
        if (state.blocksVmsAboveTarget()) {
            for (Vm vm : vms) {
                if (!vm.paused() && allocated(vm) > minPages(vm) + vm.balloon().actual() && !blocked.contains(vm)) {
                    vm.pause();
                    blocked.add(vm);
                }
            }
        } else {
            for (Vm vm : blocked) {
                if (!vm.destroyed() && vm.paused()) {
                    vm.resume();
                }
            }
            blocked.clear();
        }
        periods++;
    }

    private void reclaim(List<Vm> vms) {
        double[] shares = new double[vms.size()];
        long[] pages = new long[vms.size()];
        double[] active = new double[vms.size()];
        for (int i = 0; i < vms.size(); i++) {
            Vm vm = vms.get(i);
            shares[i] = vm.allocation().shares();
            long above = allocated(vm) - minPages(vm);
            pages[i] = above > 0 ? allocated(vm) : 0; // a VM at its min gives nothing
            active[i] = activeEstimate(vm);
        }
        int victim = IdleMemoryTax.victim(shares, pages, active, config.tau());
        if (victim < 0) {
            return;
        }
        Vm vm = vms.get(victim);
        long batch = Math.min(config.batchPages(), allocated(vm) - minPages(vm));
        boolean balloonOnly = byBalloonOnly(vm);
        if (state.balloons() || balloonOnly) {
            long target = Math.min(vm.physicalMap().frames() - minPages(vm), vm.balloon().target() + batch);
            vm.balloon().setTarget(Math.max(vm.balloon().target(), target));
            balloonedPages += batch;
        }
        if (state.swaps() && host.swap() != null && !balloonOnly) {
            swappedPages += vm.swapOutRandom(batch, random);
        }
    }

    /** A paravirtual VM: the host can neither sample nor swap its memory, only ask its balloon. */
    private static boolean byBalloonOnly(Vm vm) {
        return vm.pagingMode() == io.vmpage.engine.PagingMode.PARAVIRTUAL;
    }

    private static long allocated(Vm vm) {
        return vm.populatedFrames();
    }

    private static long minPages(Vm vm) {
        return vm.allocation().minBytes() >> 12;
    }

    /** The host's free-memory state as of the last period. */
    public FreeMemoryState state() {
        return state;
    }

    /** Pages asked of balloons so far. */
    public long balloonedPages() {
        return balloonedPages;
    }

    /** Pages swapped out so far. */
    public long swappedPages() {
        return swappedPages;
    }

    /** Periods run so far. */
    public long periods() {
        return periods;
    }

    /** The active-fraction estimate of {@code vm} (1 before its first period ended or when it is not managed). */
    public double activeEstimate(Vm vm) {
        WorkingSetSampler s = samplers.get(vm);
        return s == null ? 1.0 : s.estimate();
    }
}
