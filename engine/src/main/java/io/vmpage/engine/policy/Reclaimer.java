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
 * back; by swap where a balloon cannot help), in the hard and low states by swapping pages out at random.
 * In the low state every VM above its target allocation (the memory that keeps the host at the high
 * threshold, divided so every VM has the same shares per page: {@link IdleMemoryTax#targets}) is paused
 * until the state rises again, or the reclaimer stops (a paravirtual VM is never blocked: its balloon, run by its
 * guest, is all that can reclaim from it). Back in the high state it lowers balloon targets a batch at
 * a time, so VMs may grow again. Between periods it watches the free-memory state and meets a drop into
 * soft at once ({@link #doWork}).
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
    /** Whether a drop of the free-memory state was acted on since the period began. Agent thread. */
    private boolean reactedThisPeriod;
    /** Written by the agent thread, read by anyone. */
    private volatile FreeMemoryState state = FreeMemoryState.HIGH;
    private volatile long balloonedPages;
    private volatile long swappedPages;
    private volatile long periods;
    private volatile long swapErrors;

    public Reclaimer(Host host, Config config) {
        this.host = host;
        this.config = config;
        this.random = new SplittableRandom(config.seed());
    }

    @Override
    public String roleName() {
        return "memory-reclaimer";
    }

    /**
     * A period when one is due; between periods, the free-memory state is checked on every call (an O(1)
     * read), and a drop into the soft state is acted on at once (once per period), as ESX reallocates
     * when free memory changes state and not only on its period: a guest filling memory faster than one
     * period's worth of the soft band is met by its balloon before the host falls through to hard. Swap,
     * in the hard and low states, keeps to the period (swapping out pages a guest swaps straight back in
     * more often would only churn).
     */
    @Override
    public int doWork() {
        long now = System.nanoTime();
        if (now - nextPeriod >= 0) {
            nextPeriod = now + config.periodNanos();
            period();
            return 1;
        }
        FreeMemoryState next = state.next(freeFraction());
        if (next == state || (next.ordinal() > state.ordinal() && (reactedThisPeriod || !next.balloons()))) {
            return 0;
        }
        if (next.ordinal() < state.ordinal()) { // free memory came back: noted, and blocked VMs may go on
            state = next;
            if (!state.blocksVmsAboveTarget()) {
                unblockAll();
            }
            return 1;
        }
        reactedThisPeriod = true; // at most one early batch per period: a guest swapping straight back in cannot make it spin
        act(managedVms(), next);
        return 1;
    }

    /** Stopped ({@code Host.stopReclaimer}, {@code close}): the VMs it blocked run again, since nothing would ever unblock them. */
    @Override
    public void onClose() {
        unblockAll();
    }

    private void unblockAll() {
        for (Vm vm : blocked) {
            if (!vm.destroyed() && vm.paused()) {
                vm.resume();
            }
        }
        blocked.clear();
    }

    /** One period's work (what {@link #doWork} does when a period is due); callable directly by a driver of its own. */
    public void period() {
        reactedThisPeriod = false;
        List<Vm> vms = managedVms();
        java.util.Set<Vm> live = new java.util.HashSet<>(vms);
        samplers.keySet().retainAll(live);
        asks.keySet().retainAll(live);
        for (Vm vm : vms) {
            if (byBalloonOnly(vm)) {
                continue;
            }
            WorkingSetSampler s = samplers.computeIfAbsent(vm, v -> new WorkingSetSampler(v, config.samples(), random.nextLong()));
            s.endPeriod();
            s.startPeriod();
        }
        act(vms, state.next(freeFraction()));
        periods++;
    }

    /** The admitted VMs still alive. */
    private List<Vm> managedVms() {
        List<Vm> vms = new ArrayList<>();
        for (Vm vm : host.vms()) {
            if (vm.allocation() != null && !vm.destroyed()) {
                vms.add(vm);
            }
        }
        return vms;
    }

    private double freeFraction() {
        return (double) host.frames().freeFrames() / host.frames().frames();
    }

    /**
     * Enters state {@code next} and does what it calls for: below high, reclaims a batch from the VM with
     * the lowest rho; in high, lowers the balloon targets a batch at a time while the free memory left
     * after giving that batch back stays above the high threshold (so handing pages back never pushes the
     * host straight back into soft); in low, blocks the VMs above their target, and unblocks them above it.
     */
    private void act(List<Vm> vms, FreeMemoryState next) {
        state = next;
        if (state == FreeMemoryState.HIGH) {
            long frames = host.frames().frames();
            long spare = host.frames().freeFrames() - (long) Math.ceil(FreeMemoryState.HIGH.threshold * frames);
            for (Vm vm : vms) { // plenty: let the VMs grow back
                long target = vm.balloon().target();
                long step = Math.min(target, config.batchPages());
                if (step > 0 && spare >= step) {
                    vm.balloon().setTarget(target - step);
                    asks.remove(vm); // a smaller target is no request the guest failed to meet
                    spare -= step;
                }
            }
        } else {
            reclaim(vms);
        }
        if (state.blocksVmsAboveTarget()) {
            long[] targets = targets(vms);
            for (int i = 0; i < vms.size(); i++) {
                Vm vm = vms.get(i);
                if (!vm.paused() && !byBalloonOnly(vm) && allocated(vm) > targets[i] && !blocked.contains(vm)) {
                    vm.pause();
                    blocked.add(vm);
                }
            }
        } else {
            unblockAll();
        }
    }

    /**
     * Reclaims a batch from the VM with the lowest rho (the paper's revocation rule) among those above
     * their min that the state's mechanism can take memory from: in soft its balloon, or, where a balloon
     * cannot help (the VM's last request freed no frame, or its guest has not met it), host swap, as ESX
     * pages only where ballooning fails; in hard and low host swap, or the balloon of a VM the host cannot
     * swap (paravirtual). A VM with no mechanism left this period is passed over.
     */
    private void reclaim(List<Vm> vms) {
        int n = vms.size();
        double[] shares = new double[n];
        long[] pages = new long[n];
        double[] active = new double[n];
        int[] mechanisms = new int[n];
        for (int i = 0; i < n; i++) {
            Vm vm = vms.get(i);
            mechanisms[i] = mechanism(vm);
            shares[i] = vm.allocation().shares();
            pages[i] = allocated(vm) > minPages(vm) && mechanisms[i] != NONE ? allocated(vm) : 0;
            active[i] = activeEstimate(vm);
        }
        int v = IdleMemoryTax.victim(shares, pages, active, config.tau());
        if (v < 0) {
            return;
        }
        Vm victim = vms.get(v);
        long above = allocated(victim) - minPages(victim);
        int how = mechanisms[v];
        long batch = Math.min(config.batchPages(), above);
        if (how == BALLOON) {
            long target = Math.min(victim.physicalMap().frames() - minPages(victim), victim.balloon().target() + batch);
            asks.put(victim, new BalloonAsk(victim.balloon().framesFreed(), Math.max(victim.balloon().target(), target), periods));
            victim.balloon().setTarget(Math.max(victim.balloon().target(), target));
            balloonedPages += batch;
        } else {
            try {
                swappedPages += victim.swapOutRandom(batch, random);
            } catch (io.vmpage.engine.swap.SwapException e) { // a full or failing device: that page stayed in memory
                swapErrors++;
            }
        }
    }

    /**
     * Each of {@code vms}' target allocation in pages: their allocations plus the free memory above the
     * high threshold, divided by {@link IdleMemoryTax#targets}.
     */
    private long[] targets(List<Vm> vms) {
        int n = vms.size();
        double[] shares = new double[n];
        double[] active = new double[n];
        long[] min = new long[n];
        long[] max = new long[n];
        long frames = host.frames().frames();
        long available = host.frames().freeFrames() - (long) Math.ceil(FreeMemoryState.HIGH.threshold * frames);
        for (int i = 0; i < n; i++) {
            Vm vm = vms.get(i);
            shares[i] = vm.allocation().shares();
            active[i] = activeEstimate(vm);
            min[i] = Math.min(minPages(vm), vm.physicalMap().frames());
            max[i] = vm.physicalMap().frames();
            available += allocated(vm);
        }
        return IdleMemoryTax.targets(shares, active, min, max, Math.max(0, available), config.tau());
    }

    private static final int NONE = 0;
    private static final int BALLOON = 1;
    private static final int SWAP = 2;

    /** The last balloon request made of a VM: its frames freed before it, the target it set, and in which period. */
    private record BalloonAsk(long framesFreedBefore, long target, long period) {
    }

    /** The last request of each VM's balloon. Agent thread. */
    private final Map<Vm, BalloonAsk> asks = new IdentityHashMap<>();

    /** How the current state can take memory from {@code vm} now: {@link #BALLOON}, {@link #SWAP} or {@link #NONE}. */
    private int mechanism(Vm vm) {
        boolean swappable = !byBalloonOnly(vm) && host.swap() != null;
        boolean balloon = balloonCanHelp(vm);
        if (state.balloons()) {
            return balloon ? BALLOON : swappable ? SWAP : NONE;
        }
        return swappable ? SWAP : balloon ? BALLOON : NONE;
    }

    /**
     * Whether asking {@code vm}'s balloon for more can free frames: never asked, or its last request was met
     * (the driver reached the target) and freed frames. A request that freed none, or that its guest has
     * not met, rules the balloon out for four periods, after which it is tried again.
     */
    private boolean balloonCanHelp(Vm vm) {
        BalloonAsk last = asks.get(vm);
        if (last == null || periods - last.period() >= 4) {
            return true;
        }
        return vm.balloon().actual() >= last.target() && vm.balloon().framesFreed() > last.framesFreedBefore();
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

    /** Swap-outs that failed (a full device, an I/O error): each left its page in memory. */
    public long swapErrors() {
        return swapErrors;
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
