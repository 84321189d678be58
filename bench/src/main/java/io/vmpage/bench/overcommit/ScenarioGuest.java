package io.vmpage.bench.overcommit;

import io.vmpage.engine.Host;
import io.vmpage.engine.HostOutOfMemoryException;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.guest.GuestKernel;
import io.vmpage.engine.policy.Allocation;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

/**
 * One VM of an overcommit scenario: an admitted VM running the guest kernel model, a heap in one user
 * address space, and a driver thread that is the guest's life. It boots: touches every heap page at a
 * paced rate (image pages, the same in every VM booted with the same image seed; zero pages, only read;
 * private pages, its own), a busy boot reading back earlier pages in turn with each (a booting guest uses
 * what it set up so far, so working-set sampling sees it busy), then frees the part of the heap above {@code keptPages} (a guest that ran a
 * job and dropped its caches: the pages are free in the guest but still backed). Then it runs: an
 * active guest writes its kept heap round and round, as fast as it can in bursts; an idle one does
 * nothing. Active or idle, every millisecond its kernel services the balloon (virtio-balloon's work
 * item). A touch the host has no frame for ({@link HostOutOfMemoryException}: the access left the VM as
 * it was) stalls the guest a millisecond and is retried, as ESX blocks a VM waiting for memory.
 *
 * <p>Writes go to the second word of a page, and the value last written to each page is journaled, so
 * {@link #verify} can compare every kept page with what the guest put there, whatever sharing, the
 * balloon and swap did to it meanwhile.
 */
final class ScenarioGuest implements AutoCloseable {
    static final long HEAP = 0x0000_5000_0000_0000L;
    private static final int PAGE = 4096;
    /**
     * Earlier pages a busy boot reads per page it sets up, in turn: at a guest's boot pace that is every
     * page it has within a sampling period, so working-set sampling sees all of it in use.
     */
    private static final int BUSY_BOOT_READS = 16;
    /** Pages an active guest writes per burst, attached to its vCPU, between two balloon services. */
    private static final int BURST = 1024;

    /**
     * What the guest is.
     *
     * @param heapPages heap pages touched at boot
     * @param keptPages the heap pages it keeps after boot (the rest it frees)
     * @param imagePages the first heap pages: the boot image's contents
     * @param zeroPages the heap pages after those: read only (zero)
     * @param bootPagesPerSecond the pace of the boot's touches (0: as fast as it can)
     * @param imageSeed what the image pages hold (the same seed, the same pages)
     * @param bootDelayNanos how long after the scenario starts the guest boots
     * @param busyBoot whether each boot step also reads back earlier pages in turn (a booting guest using
     *     what it set up, so working-set sampling sees it busy); without, a boot only touches new pages
     */
    record Spec(String name, long memoryBytes, long minBytes, long shares, boolean active, int heapPages, int keptPages,
                int imagePages, int zeroPages, long bootPagesPerSecond, long imageSeed, long bootDelayNanos, boolean busyBoot) {
        Spec {
            if (keptPages > heapPages || imagePages + zeroPages > heapPages || heapPages < 1) {
                throw new IllegalArgumentException("guest " + name + ": kept, image and zero pages must lie within its heap of "
                    + heapPages + " pages");
            }
        }
    }

    private final Spec spec;
    private final Vm vm;
    private final GuestKernel kernel;
    private final GuestKernel.AddressSpace space;
    private final long privateSeed;
    /** Value last written to the second word of each kept page (0: only the boot's contents). Driver thread; read after {@link #stop}. */
    private final long[] journal;
    private final Thread thread;
    /** Set by the scenario, read by the driver each round. */
    private volatile boolean stop;
    private volatile boolean booted;
    private volatile Throwable failure;
    private final AtomicLong stalls = new AtomicLong();
    private final AtomicLong writes = new AtomicLong();

    ScenarioGuest(Host host, Spec spec, PagingMode paging, long seed) {
        this.spec = spec;
        this.vm = host.admitVm(VmConfig.of(spec.memoryBytes()).withPaging(paging).withVcpus(1),
            new Allocation(spec.minBytes(), spec.shares()));
        this.kernel = GuestKernel.boot(vm);
        Vcpu cpu = vm.vcpu(0);
        this.space = kernel.createAddressSpace(cpu);
        if ((long) spec.heapPages() + 64 > kernel.freeFrameCount()) {
            throw new IllegalArgumentException("guest " + spec.name() + ": a heap of " + spec.heapPages() + " pages does not fit"
                + " the " + kernel.freeFrameCount() + " free pages of its kernel");
        }
        cpu.run(() -> kernel.mmap(space, HEAP, (long) spec.heapPages() * PAGE, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE));
        cpu.run(() -> kernel.switchTo(cpu, space));
        this.privateSeed = seed;
        this.journal = new long[spec.keptPages()];
        this.thread = new Thread(this::live, "guest-" + spec.name());
        this.thread.setDaemon(true);
    }

    /** Starts the guest's life: it boots {@code bootDelayNanos} after {@code startNanos}. */
    void start(long startNanos) {
        this.startNanos = startNanos;
        thread.start();
    }

    /** When the scenario started (the driver waits for its boot delay from here). Written before the driver starts. */
    private long startNanos;

    Spec spec() {
        return spec;
    }

    Vm vm() {
        return vm;
    }

    boolean booted() {
        return booted;
    }

    /** Touches the host had no frame for (each stalled the guest a millisecond). */
    long stalls() {
        return stalls.get();
    }

    /** Page writes after boot. */
    long writes() {
        return writes.get();
    }

    Throwable failure() {
        return failure;
    }

    private void live() {
        try {
            while (System.nanoTime() - (startNanos + spec.bootDelayNanos()) < 0) {
                if (stop) {
                    return;
                }
                LockSupport.parkNanos(1_000_000);
            }
            boot();
            booted = true;
            Vcpu cpu = vm.vcpu(0);
            int next = 0;
            long n = 0;
            while (!stop) {
                kernel.balloon().service(cpu);
                if (!spec.active() || spec.keptPages() == 0) {
                    LockSupport.parkNanos(1_000_000);
                    continue;
                }
                long first = n;
                try {
                    cpu.attachThread();
                    try {
                        for (int i = 0; i < BURST && !stop; i++) {
                            cpu.writeLong(page(next) + 8, n + 1);
                            journal[next] = n + 1;
                            n++;
                            next = next + 1 == spec.keptPages() ? 0 : next + 1;
                        }
                    } finally {
                        cpu.detachThread();
                    }
                } catch (HostOutOfMemoryException e) {
                    stall();
                }
                writes.addAndGet(n - first);
                Thread.yield();
            }
        } catch (Throwable t) {
            failure = t;
        }
    }

    private void boot() {
        Vcpu cpu = vm.vcpu(0);
        byte[] contents = new byte[PAGE];
        int readBack = 0; // the next earlier page a busy boot reads
        long interval = spec.bootPagesPerSecond() > 0 ? 1_000_000_000L / spec.bootPagesPerSecond() : 0;
        long due = System.nanoTime();
        for (int p = 0; p < spec.heapPages() && !stop; p++) {
            if (interval > 0) {
                due += interval;
                long wait = due - System.nanoTime();
                if (wait > 0) {
                    LockSupport.parkNanos(wait);
                }
                if ((p & 255) == 0) {
                    kernel.balloon().service(cpu);
                }
            }
            boolean zero = p >= spec.imagePages() && p < spec.imagePages() + spec.zeroPages();
            if (!zero) {
                contents(p, contents);
            }
            while (true) {
                try {
                    if (zero) {
                        cpu.readLong(page(p));
                    } else {
                        cpu.write(page(p), contents, 0, PAGE);
                    }
                    for (int r = 0; spec.busyBoot() && r < BUSY_BOOT_READS; r++) { // it uses what it set up so far
                        readBack = readBack + 1 > p ? 0 : readBack + 1;
                        cpu.readLong(page(readBack));
                    }
                    break;
                } catch (HostOutOfMemoryException e) {
                    stall();
                    if (stop) {
                        return;
                    }
                }
            }
        }
        if (spec.keptPages() < spec.heapPages() && !stop) {
            cpu.run(() -> kernel.munmap(cpu, space, page(spec.keptPages()),
                (long) (spec.heapPages() - spec.keptPages()) * PAGE));
        }
    }

    private void stall() {
        stalls.incrementAndGet();
        LockSupport.parkNanos(1_000_000);
    }

    /** What heap page {@code p} holds after boot: the image's bytes for an image page, the guest's own for the others. */
    private void contents(int p, byte[] into) {
        boolean image = p < spec.imagePages();
        SplittableRandom r = new SplittableRandom((image ? spec.imageSeed() : privateSeed) * 0x9E37_79B9_7F4A_7C15L + p);
        for (int i = 0; i < PAGE; i += 8) {
            long v = r.nextLong();
            for (int b = 0; b < 8; b++) {
                into[i + b] = (byte) (v >>> (b * 8));
            }
        }
    }

    static long page(int p) {
        return HEAP + (long) p * PAGE;
    }

    /** Stops the driver and waits for it; a failure of the driver is rethrown. */
    void stop() throws InterruptedException {
        stop = true;
        thread.join(TimeUnit.SECONDS.toMillis(30));
        if (thread.isAlive()) {
            throw new IllegalStateException("guest " + spec.name() + " did not stop within 30 s");
        }
        if (failure != null) {
            throw new IllegalStateException("guest " + spec.name() + " failed: " + failure, failure);
        }
    }

    /** Stops the driver if it runs and waits for it, whatever it did: for clean-up after a failure. */
    void halt() {
        stop = true;
        if (thread.isAlive()) {
            try {
                thread.join(TimeUnit.SECONDS.toMillis(30));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /**
     * After {@link #stop}: reads every kept heap page through the guest (swapping back in what is on swap)
     * and counts those that differ from what the guest put there.
     */
    long verify() {
        if (!booted) {
            return 0;
        }
        Vcpu cpu = vm.vcpu(0);
        byte[] expected = new byte[PAGE];
        byte[] actual = new byte[PAGE];
        long wrong = 0;
        for (int p = 0; p < spec.keptPages(); p++) {
            boolean zero = p >= spec.imagePages() && p < spec.imagePages() + spec.zeroPages();
            if (zero) {
                java.util.Arrays.fill(expected, (byte) 0);
            } else {
                contents(p, expected);
            }
            if (journal[p] != 0) {
                long v = journal[p];
                for (int b = 0; b < 8; b++) {
                    expected[8 + b] = (byte) (v >>> (b * 8));
                }
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (true) {
                try {
                    cpu.read(page(p), actual, 0, PAGE);
                    break;
                } catch (HostOutOfMemoryException e) { // the reclaimer still runs: it makes room
                    if (System.nanoTime() - deadline > 0) {
                        throw new IllegalStateException("guest " + spec.name() + ": no machine frame to read page " + p
                            + " back into for 30 s", e);
                    }
                    LockSupport.parkNanos(1_000_000);
                }
            }
            if (!java.util.Arrays.equals(expected, actual)) {
                wrong++;
            }
        }
        return wrong;
    }

    @Override
    public void close() {
        if (!vm.destroyed()) {
            vm.host().destroyVm(vm);
        }
    }
}
