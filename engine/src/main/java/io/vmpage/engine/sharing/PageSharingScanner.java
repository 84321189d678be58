package io.vmpage.engine.sharing;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vm;
import io.vmpage.engine.memory.FrameDescriptor;
import io.vmpage.mmu.MachineMemory;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.agrona.concurrent.Agent;

/**
 * Content-based page sharing as ESX does it (Waldspurger, OSDI 2002, section 3): a background scanner
 * picks guest pages at random at a bounded rate, hashes each page's contents to 64 bits and looks the hash
 * up in one host-wide table ({@link SharingTable}).
 * <ul>
 * <li>No entry: the page becomes a <em>hint</em> (hashed once, not shared; it stays writable).
 * <li>A hint of another page: the hint's page is hashed again. Changed since (or gone), the hint is
 *     dropped and this page takes its place; unchanged, the two are merged by {@link Host#share}, which
 *     write-protects both, compares them in full and only then maps one frame read-only into both. The
 *     entry then names the shared frame.
 * <li>A shared frame: the page joins it ({@link Host#joinShared}, the same compare first).
 * </ul>
 * A write to a shared page exits and gets a private copy ({@code ExitReason.COPY_ON_WRITE}). The all-zero
 * page is special-cased: every zero page of every VM joins one zero frame. A VM shares only with VMs of
 * its own sharing domain ({@link Vm#setSharingDomain}, ESX's salting): the domain salts the hash, and a
 * match is checked against the other VM's domain before anything is merged.
 *
 * <p>Nested paging (KSM over EPT) and shadow paging (what ESX itself did in 2002: every sharer's shadow
 * leaves read-only). Paravirtual VMs are skipped: their page tables hold machine frames, and Xen does
 * not share PV memory.
 *
 * <p>Run as an Agrona {@link Agent} on its own thread ({@link Host#startPageSharing}); {@link #scan} is
 * the same step for one chosen page. Threads: the agent's, and any caller of {@link #scan} or
 * {@link #stats}; the scanner's monitor guards the table, the random picks and the counters.
 */
public final class PageSharingScanner implements Agent {
    /** What {@link #scan} did with a page. */
    public enum Outcome {
        /** Not populated, not a data frame, or the VM cannot share (paging mode, destroyed). */
        SKIPPED,
        /** Already mapping a shared frame. */
        ALREADY_SHARED,
        /** Hashed and left as a hint (nothing to share it with yet, or the hint there was stale). */
        HINTED,
        /** Merged: it maps a shared frame now. */
        MERGED,
        /** Its hash matched but the full compare (or a racing write) stopped the merge. */
        MISMATCHED,
    }

    /** A burst the rate buckets may save up: this many seconds' worth (at least one page). */
    private static final double BURST_SECONDS = 0.05;
    /** Random picks per doWork call that may land on unpopulated frames before the call gives up. */
    private static final int PICKS_PER_CALL = 64;
    private static final long ZERO_KEY = MachineMemory.zeroFrameHash();

    private final Host host;
    private final SharingConfig config;
    private final SharingTable table;
    private final SplittableRandom random;
    /** Per-VM rate buckets (pages the VM may still be scanned for). Guarded by this. */
    private final Map<Vm, double[]> buckets = new IdentityHashMap<>();
    private double totalBucket;
    private long lastRefill = System.nanoTime();
    private final long started = System.nanoTime();
    private int cursor;

    // Counters: written under this, read by stats() under this.
    private long scanned;
    private long merges;
    private long zeroMerges;
    private long staleHints;
    private long mismatches;

    /**
     * A scanner for {@code host}'s VMs, not running ({@link Host#startPageSharing} runs one); its table
     * takes at most 0.25% of the host's machine memory.
     */
    public PageSharingScanner(Host host, SharingConfig config) {
        this.host = host;
        this.config = config;
        this.table = new SharingTable(host.memory().size() / 400);
        this.random = new SplittableRandom(config.seed());
    }

    @Override
    public String roleName() {
        return "page-sharing-scanner";
    }

    /** Scans random pages of the host's VMs as far as the rates allow; the number scanned (0: idle a while). */
    @Override
    public synchronized int doWork() {
        List<Vm> vms = host.vms();
        refill(vms);
        int work = 0;
        int picks = 0;
        for (int i = 0; i < vms.size() && picks < PICKS_PER_CALL && (config.pagesPerSecond() == 0 || totalBucket >= 1); i++) {
            Vm vm = vms.get((cursor + i) % vms.size());
            double[] bucket = buckets.get(vm);
            if (!scannable(vm) || (config.pagesPerSecondPerVm() > 0 && bucket[0] < 1)) {
                continue;
            }
            long frames = vm.physicalMap().frames();
            Outcome outcome = Outcome.SKIPPED;
            for (int tries = 0; outcome == Outcome.SKIPPED && tries < 16 && picks < PICKS_PER_CALL; tries++, picks++) {
                outcome = scan(vm, random.nextLong(frames));
            }
            if (outcome != Outcome.SKIPPED) {
                work++;
                if (config.pagesPerSecondPerVm() > 0) {
                    bucket[0]--;
                }
                if (config.pagesPerSecond() > 0) {
                    totalBucket--;
                }
            }
        }
        cursor = vms.isEmpty() ? 0 : (cursor + 1) % vms.size();
        return work;
    }

    /** Adds the tokens the time since the last refill earned, up to a short burst; forgets destroyed VMs. */
    private void refill(List<Vm> vms) {
        long now = System.nanoTime();
        double seconds = (now - lastRefill) / 1e9;
        lastRefill = now;
        buckets.keySet().retainAll(new java.util.HashSet<>(vms));
        double perVm = config.pagesPerSecondPerVm();
        for (Vm vm : vms) {
            double[] b = buckets.computeIfAbsent(vm, v -> new double[1]);
            b[0] = Math.min(Math.max(1, perVm * BURST_SECONDS), b[0] + perVm * seconds);
        }
        double total = config.pagesPerSecond();
        totalBucket = Math.min(Math.max(1, total * BURST_SECONDS), totalBucket + total * seconds);
    }

    private static boolean scannable(Vm vm) {
        return !vm.destroyed() && vm.pagingMode() != PagingMode.PARAVIRTUAL;
    }

    /**
     * One step of the scanner for guest frame {@code gfn} of {@code vm}: hash it, look it up, and hint,
     * merge or join as ESX does (see the class comment). Safe while the VM's vCPUs run.
     *
     * @throws IllegalArgumentException when the VM is not on this host or the frame is outside it
     */
    public synchronized Outcome scan(Vm vm, long gfn) {
        if (vm.host() != host) {
            throw new IllegalArgumentException(vm + " does not run on this scanner's host");
        }
        if (!vm.physicalMap().contains(gfn)) {
            throw new IllegalArgumentException("guest frame 0x" + Long.toHexString(gfn) + " is outside " + vm + "'s memory");
        }
        try {
            return step(vm, gfn);
        } catch (IllegalArgumentException | IllegalStateException e) {
            if (vm.destroyed()) {
                return Outcome.SKIPPED; // destroyed while it was scanned
            }
            throw e;
        }
    }

    private Outcome step(Vm vm, long gfn) {
        if (!scannable(vm)) {
            return Outcome.SKIPPED;
        }
        long mfn = vm.physicalMap().machineFrame(gfn);
        if (mfn < 0) {
            return Outcome.SKIPPED;
        }
        int type = FrameDescriptor.type(host.frames().descriptor(mfn));
        if (type == FrameDescriptor.TYPE_SHARED) {
            return Outcome.ALREADY_SHARED;
        }
        if (type != FrameDescriptor.TYPE_DATA) {
            return Outcome.SKIPPED;
        }
        scanned++;
        long hash = vm.frameContentHash(gfn);
        boolean zero = hash == ZERO_KEY;
        long key = zero ? ZERO_KEY : salted(hash, vm);
        long entry = table.get(key);
        if (entry == SharingTable.EMPTY) {
            table.put(key, SharingTable.hint(vm.id(), gfn));
            return Outcome.HINTED;
        }
        int otherId = SharingTable.vmId(entry);
        long otherGfn = SharingTable.gfn(entry);
        if (otherId == vm.id() && otherGfn == gfn) {
            return Outcome.HINTED; // this page is the hint (or the sharer) already
        }
        Vm other = host.vm(otherId);
        boolean usable = other != null && scannable(other) && (zero || sameDomain(vm, other))
            && other.physicalMap().contains(otherGfn);
        if (SharingTable.isShared(entry)) {
            long sharedFrame = usable ? other.physicalMap().machineFrame(otherGfn) : -1;
            if (sharedFrame < 0 || FrameDescriptor.type(host.frames().descriptor(sharedFrame)) != FrameDescriptor.TYPE_SHARED) {
                table.put(key, SharingTable.hint(vm.id(), gfn)); // the sharer wrote its copy or went: start again from here
                return Outcome.HINTED;
            }
            if (host.joinShared(sharedFrame, vm, gfn)) {
                merged(zero);
                table.put(key, SharingTable.shared(vm.id(), gfn)); // the newest sharer stands for the frame
                return Outcome.MERGED;
            }
            long d = host.frames().descriptor(sharedFrame);
            if (FrameDescriptor.type(d) == FrameDescriptor.TYPE_SHARED && FrameDescriptor.refs(d) >= Host.MAX_SHARERS) {
                table.put(key, SharingTable.hint(vm.id(), gfn)); // full (KSM's max_page_sharing): the next match starts a new frame
                return Outcome.HINTED;
            }
            mismatches++;
            return Outcome.MISMATCHED;
        }
        int merge = usable ? mergeWithHint(other, otherGfn, hash, vm, gfn) : STALE;
        if (merge == STALE) {
            staleHints++; // the hint's page changed since it was hashed, or went: dropped, never merged
            table.put(key, SharingTable.hint(vm.id(), gfn));
            return Outcome.HINTED;
        }
        if (merge == MERGED) {
            merged(zero);
            table.put(key, SharingTable.shared(vm.id(), gfn));
            return Outcome.MERGED;
        }
        mismatches++;
        return Outcome.MISMATCHED;
    }

    private static final int STALE = 0;
    private static final int MERGED = 1;
    private static final int NOT_MERGED = 2;

    /**
     * Hashes the hint's page again and, unchanged, merges the two pages ({@link Host#share} compares them
     * in full first). STALE when it changed, went, or its VM was destroyed meanwhile.
     */
    private int mergeWithHint(Vm other, long otherGfn, long hash, Vm vm, long gfn) {
        try {
            if (other.physicalMap().machineFrame(otherGfn) < 0 || other.frameContentHash(otherGfn) != hash) {
                return STALE;
            }
            return host.share(other, otherGfn, vm, gfn) ? MERGED : NOT_MERGED;
        } catch (IllegalArgumentException | IllegalStateException e) {
            if (other.destroyed()) {
                return STALE;
            }
            throw e;
        }
    }

    private void merged(boolean zero) {
        merges++;
        if (zero) {
            zeroMerges++;
        }
    }

    private static boolean sameDomain(Vm a, Vm b) {
        return a == b || (a.sharingDomain() != null && a.sharingDomain().equals(b.sharingDomain()));
    }

    /**
     * The table key of a page of {@code vm} hashing to {@code hash}: salted with its domain (ESX salts the
     * hash per VM or per salt value), so pages of different domains never even meet in the table.
     */
    private static long salted(long hash, Vm vm) {
        long salt = vm.sharingDomain() == null ? 0x5A17_0000_0000_0000L | vm.id() : vm.sharingDomain().hashCode();
        long h = hash ^ (salt * 0x9E3779B97F4A7C15L);
        h ^= h >>> 31;
        h *= 0xBF58476D1CE4E5B9L;
        h ^= h >>> 29;
        return h == ZERO_KEY ? h ^ 1 : h; // never the zero page's key
    }

    /** A snapshot of what sharing has done on the host (walks the frame table for the sharer count). */
    public synchronized SharingStats stats() {
        long sharedFrames = host.sharedFrames();
        long sharers = host.sharers();
        double seconds = (System.nanoTime() - started) / 1e9;
        return new SharingStats(scanned, table.hints(), sharedFrames, sharers,
            Math.max(0, sharers - sharedFrames) * MachineMemory.FRAME_SIZE, host.copyOnWriteBreaks(), merges, zeroMerges,
            staleHints, mismatches, table.evicted(), seconds > 0 ? scanned / seconds : 0, table.bytes());
    }
}
