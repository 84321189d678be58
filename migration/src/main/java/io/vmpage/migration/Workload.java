package io.vmpage.migration;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.guest.GuestKernel;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.atomic.AtomicReferenceArray;
import java.util.concurrent.locks.LockSupport;

/**
 * A guest to migrate: the guest kernel model booted in a VM, one address space whose heap is mapped
 * and written once (so it is populated, as a guest that has been running is), and one writer thread
 * per vCPU that keeps writing while the migration runs, without pausing between writes. A writer drives
 * its vCPU attached or with one-off accesses, picks pages by a {@link Pattern} among its own pages
 * (writer {@code w} owns heap pages {@code w, w + writers, ...}), can be paced to a total dirty rate,
 * and keeps a journal: the last value it completed in the first word of each page. The writers follow
 * the VM: when the VM they write is destroyed under them (the source after a switch-over) they carry on
 * with the VM {@link #follow} names, retrying the interrupted write there.
 */
public final class Workload implements AutoCloseable {
    /** Guest-virtual base of the heap. */
    public static final long HEAP = 0x0000_6000_0000_0000L;
    private static final int PAGE = 4096;
    /** The longest wait: for the writers to progress, to stop, and for a writer whose VM failed under it to see {@link #follow}. */
    private static final long WAIT_NANOS = 30_000_000_000L;

    /** How a writer picks the next page among its own. */
    public enum Pattern {
        /** Any page, uniformly. */
        UNIFORM,
        /** Uniformly within a hot set (the writable working set) at the start of the heap. */
        HOTSET,
        /** Zipf-distributed over the pages (exponent 0.99, YCSB's): a few pages take most writes. */
        ZIPF,
        /** One page after another, wrapping around. */
        SEQUENTIAL
    }

    private final Vm vm;
    private final GuestKernel kernel;
    private final int pages;
    private final Pattern pattern;
    private final int hotPages;
    private final long writeIntervalNanos;
    private final double[] zipfCdf;
    private final AtomicReference<Vm> current = new AtomicReference<>();
    private final long[][] journal;
    private final AtomicLong[] writes;
    private final AtomicLong writesOnFollowed = new AtomicLong();
    private final AtomicReferenceArray<Throwable> failures;
    private final Thread[] threads;
    private volatile boolean stop;

    /**
     * A VM of {@code memoryBytes} with {@code writers} vCPUs on {@code host}, whose heap of {@code pages}
     * pages is mapped and written once.
     *
     * @param hotPages the hot set for {@link Pattern#HOTSET} (at least one page per writer)
     * @param dirtyRateBytesPerSecond total page writes per second over all writers, in bytes (pages x 4 KiB); 0: unpaced
     */
    public Workload(Host host, PagingMode mode, int writers, long memoryBytes, int pages, Pattern pattern, int hotPages,
                    long dirtyRateBytesPerSecond) {
        if (writers < 1 || pages < writers || (pattern == Pattern.HOTSET && (hotPages < writers || hotPages > pages))) {
            throw new IllegalArgumentException("a workload needs at least one page per writer (and a hot set of at least"
                + " one page per writer, within the heap)");
        }
        this.vm = host.createVm(VmConfig.of(memoryBytes).withPaging(mode).withVcpus(writers));
        this.pages = pages;
        this.pattern = pattern;
        this.hotPages = hotPages;
        this.writeIntervalNanos = dirtyRateBytesPerSecond > 0
            ? (long) (1e9 * PAGE * writers / dirtyRateBytesPerSecond) : 0;
        this.zipfCdf = pattern == Pattern.ZIPF ? zipf(pages / writers, 0.99) : null;
        this.kernel = GuestKernel.boot(vm);
        Vcpu cpu0 = vm.vcpu(0);
        GuestKernel.AddressSpace space = kernel.createAddressSpace(cpu0);
        cpu0.run(() -> kernel.mmap(space, HEAP, (long) pages * PAGE, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE));
        for (Vcpu cpu : vm.vcpus()) {
            cpu.run(() -> kernel.switchTo(cpu, space));
        }
        cpu0.run(() -> {
            for (int p = 0; p < pages; p++) {
                cpu0.writeLong(page(p) + 8, p + 1); // populated, and not a zero page
            }
        });
        current.set(vm);
        journal = new long[writers][pages];
        writes = new AtomicLong[writers];
        failures = new AtomicReferenceArray<>(writers);
        threads = new Thread[writers];
        for (int w = 0; w < writers; w++) {
            writes[w] = new AtomicLong();
        }
    }

    /** The guest kernel's device name in a migration stream ({@link Devices}). */
    public static final String KERNEL_DEVICE = "guest-kernel";

    /** The guest kernel model running in the source VM. */
    public GuestKernel kernel() {
        return kernel;
    }

    /**
     * The device state this guest migrates with: its kernel's state outside guest memory, saved on the
     * source and restored on the destination into {@code restored} ({@link #loadKernel}).
     */
    public Devices devices(java.util.concurrent.atomic.AtomicReference<GuestKernel> restored) {
        return loadKernel(Devices.none().save(KERNEL_DEVICE, kernel::saveState), restored);
    }

    /** {@code devices}, restoring a migrated guest kernel into {@code restored} when the stream carries one. */
    public static Devices loadKernel(Devices devices, java.util.concurrent.atomic.AtomicReference<GuestKernel> restored) {
        return devices.load(KERNEL_DEVICE, (vm, state) -> restored.set(GuestKernel.restore(vm, state)));
    }

    /** The VM the workload was built in (the migration's source). */
    public Vm vm() {
        return vm;
    }

    public int pages() {
        return pages;
    }

    /** Guest-virtual address of heap page {@code p}. */
    public static long page(int p) {
        return HEAP + (long) p * PAGE;
    }

    /** Starts the writers, attached to their vCPUs or making one-off accesses, seeded. */
    public void start(boolean attached, long seed) {
        for (int w = 0; w < threads.length; w++) {
            int writer = w;
            threads[w] = new Thread(() -> run(writer, attached, seed + writer), "writer-vcpu" + w);
            threads[w].setDaemon(true);
            threads[w].start();
        }
    }

    private int nextIndex(SplittableRandom random, int mine, int last) {
        switch (pattern) {
            case UNIFORM:
                return random.nextInt(mine);
            case HOTSET:
                return random.nextInt(Math.max(1, hotPages / threads.length));
            case SEQUENTIAL:
                return (last + 1) % mine;
            case ZIPF: {
                int i = java.util.Arrays.binarySearch(zipfCdf, random.nextDouble());
                return Math.min(mine - 1, i < 0 ? -i - 1 : i);
            }
            default:
                throw new IllegalStateException(pattern.name());
        }
    }

    private void run(int w, boolean attached, long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        int writers = threads.length;
        int mine = pages / writers;
        Vm on = null;
        Vcpu cpu = null;
        long seq = 0;
        int index = -1;
        long due = System.nanoTime();
        try {
            while (!stop) {
                if (current.get() != on) {
                    if (attached && cpu != null && Vcpu.current() == cpu) {
                        cpu.detachThread(); // followed while the old VM still runs: leave its vCPU first
                    }
                    on = current.get();
                    cpu = on.vcpu(w);
                    if (attached) {
                        cpu.attachThread();
                    }
                    due = System.nanoTime() - cpu.throttledNanos(); // a new vCPU, a new guest clock
                }
                if (writeIntervalNanos > 0) {
                    // Paced on the guest's clock: time the vCPU was held out by a throttle does not count, so a
                    // throttled writer writes less (as a CPU-bound guest does), rather than catching up after.
                    due += writeIntervalNanos;
                    long ahead = due - (System.nanoTime() - cpu.throttledNanos());
                    if (ahead > 0) {
                        LockSupport.parkNanos(ahead);
                    } else if (ahead < -100_000_000L) {
                        due = System.nanoTime() - cpu.throttledNanos(); // far behind (paused): no burst to catch up
                    }
                }
                index = nextIndex(random, mine, index);
                int p = w + writers * index;
                long value = ((long) (w + 1) << 48) | ++seq;
                int offset = random.nextBoolean() ? 0 : 8 * random.nextInt(PAGE / 8); // the first word is journaled
                try {
                    cpu.writeLong(page(p) + offset, value);
                } catch (IllegalStateException destroyed) { // the VM went away under us: follow it
                    if (attached && Vcpu.current() == cpu) {
                        cpu.detachThread();
                    }
                    Vm gone = on;
                    long giveUp = System.nanoTime() + WAIT_NANOS;
                    while (current.get() == gone && !stop) {
                        if (System.nanoTime() - giveUp > 0) {
                            throw new IllegalStateException("writer " + w + ": the VM failed under it and no VM to follow"
                                + " was named within 30 s", destroyed);
                        }
                        Thread.onSpinWait();
                    }
                    on = null;
                    seq--;
                    continue;
                }
                if (offset == 0) {
                    journal[w][p] = value;
                }
                writes[w].incrementAndGet();
                if (on != vm) {
                    writesOnFollowed.incrementAndGet();
                }
            }
        } catch (Throwable t) {
            failures.set(w, t);
        } finally {
            Vcpu running = Vcpu.current(); // whichever vCPU this thread still runs, so none is left in guest mode
            if (running != null) {
                running.detachThread();
            }
        }
    }

    /** The writers carry on with {@code next} once the VM they write is destroyed. */
    public void follow(Vm next) {
        current.set(next);
    }

    /** Waits (at most 30 s) until every writer completed {@code n} more writes than it had. */
    public void awaitWrites(long n) throws InterruptedException {
        long[] from = new long[writes.length];
        for (int w = 0; w < writes.length; w++) {
            from[w] = writes[w].get();
        }
        long deadline = System.nanoTime() + WAIT_NANOS;
        for (int w = 0; w < writes.length; w++) {
            while (writes[w].get() < from[w] + n) {
                checkFailures();
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("writer " + w + " made no progress for 30 s");
                }
                Thread.sleep(1);
            }
        }
    }

    /** Writes completed so far, all writers. */
    public long writes() {
        long n = 0;
        for (AtomicLong a : writes) {
            n += a.get();
        }
        return n;
    }

    /** Writes completed on a VM the writers followed to. */
    public long writesOnFollowedVm() {
        return writesOnFollowed.get();
    }

    /** The value heap page {@code p}'s first word must hold: the last one its writer completed there (0 if none). */
    public long expected(int p) {
        return journal[p % threads.length][p];
    }

    /** Heap pages whose first word on {@code vm} differs from the journal (read through vCPU 0; writers stopped). */
    public long journalMismatches(Vm on) {
        Vcpu reader = on.vcpu(0);
        long bad = 0;
        for (int p = 0; p < pages; p++) {
            if (reader.readLong(page(p)) != expected(p)) {
                bad++;
            }
        }
        return bad;
    }

    /** Populates {@code n} guest frames nobody uses with zeros (a guest's freshly zeroed pages). */
    public void populateZeroFrames(int n) {
        for (long gfn = vm.physicalMap().frames() - 1; gfn >= 0 && n > 0; gfn--) {
            if (vm.physicalMap().machineFrame(gfn) < 0) {
                vm.writePhysicalLong(gfn << 12, 0);
                n--;
            }
        }
    }

    /**
     * Stops and joins the writers (at most 30 s); fails when one failed, or names the writer that did not
     * stop and where it is stuck. A source left paused is resumed so they can stop.
     */
    public void stop() throws InterruptedException {
        stop = true;
        if (vm.paused()) {
            vm.resume();
        }
        long deadline = System.nanoTime() + WAIT_NANOS;
        for (Thread t : threads) {
            if (t != null) {
                t.join(Math.max(1, (deadline - System.nanoTime()) / 1_000_000));
                if (t.isAlive()) {
                    StringBuilder at = new StringBuilder();
                    for (StackTraceElement e : t.getStackTrace()) {
                        at.append("\n\tat ").append(e);
                    }
                    throw new IllegalStateException(t.getName() + " did not stop within 30 s; it is at:" + at);
                }
            }
        }
        checkFailures();
    }

    private void checkFailures() {
        for (int w = 0; w < threads.length; w++) {
            if (failures.get(w) != null) {
                throw new IllegalStateException("writer " + w + " failed: " + failures.get(w), failures.get(w));
            }
        }
    }

    @Override
    public void close() throws InterruptedException {
        stop();
    }

    /** The cumulative distribution of ranks 0..n-1 under Zipf's law with exponent {@code s}. */
    private static double[] zipf(int n, double s) {
        double[] cdf = new double[n];
        double sum = 0;
        for (int k = 0; k < n; k++) {
            sum += 1 / Math.pow(k + 1, s);
            cdf[k] = sum;
        }
        for (int k = 0; k < n; k++) {
            cdf[k] /= sum;
        }
        return cdf;
    }
}
