package io.vmpage.migration;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.guest.GuestKernel;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.atomic.AtomicReferenceArray;

/**
 * Test fixture: a guest kernel with one address space whose heap pages are written by one thread per
 * vCPU that never pauses, driving its vCPU attached or with one-off accesses. Each writer owns its own
 * pages and keeps a journal of the last value it completed on each. The writers follow the VM: when
 * the VM they write is destroyed under them (the source after a migration), they carry on with the
 * VM {@link #follow} names, retrying the interrupted write there.
 */
final class WrittenGuest implements AutoCloseable {
    static final long HEAP = 0x0000_6000_0000_0000L;

    final Vm vm;
    final int pages;
    private final AtomicReference<Vm> current = new AtomicReference<>();
    private final long[][] journal;
    private final AtomicLong[] writes;
    private final AtomicLong writesOnFollowed = new AtomicLong();
    private final AtomicReferenceArray<Throwable> failures;
    private final Thread[] threads;
    private volatile boolean stop;

    WrittenGuest(Host host, PagingMode mode, int vcpus, int pages, long memoryBytes) {
        this.vm = host.createVm(VmConfig.of(memoryBytes).withPaging(mode).withVcpus(vcpus));
        this.pages = pages;
        GuestKernel kernel = GuestKernel.boot(vm);
        Vcpu cpu0 = vm.vcpu(0);
        GuestKernel.AddressSpace space = kernel.createAddressSpace(cpu0);
        kernel.mmap(space, HEAP, pages * 4096L, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE);
        for (Vcpu cpu : vm.vcpus()) {
            cpu.run(() -> kernel.switchTo(cpu, space));
        }
        cpu0.run(() -> {
            for (int p = 0; p < pages; p++) {
                cpu0.writeLong(page(p), 0);
            }
        });
        current.set(vm);
        journal = new long[vcpus][pages];
        writes = new AtomicLong[vcpus];
        failures = new AtomicReferenceArray<>(vcpus);
        threads = new Thread[vcpus];
        for (int w = 0; w < vcpus; w++) {
            writes[w] = new AtomicLong();
        }
    }

    /** Populates {@code n} guest frames nobody uses with zeros (what a guest's freshly zeroed pages look like). */
    void populateZeroFrames(int n) {
        for (long gfn = vm.physicalMap().frames() - 1; gfn >= 0 && n > 0; gfn--) {
            if (vm.physicalMap().machineFrame(gfn) < 0) {
                vm.writePhysicalLong(gfn << 12, 0);
                n--;
            }
        }
    }

    static long page(int p) {
        return HEAP + p * 4096L;
    }

    /** Starts the writers, attached to their vCPUs or making one-off accesses. */
    void start(boolean attached, long seed) {
        for (int w = 0; w < threads.length; w++) {
            int writer = w;
            threads[w] = new Thread(() -> run(writer, attached, seed + writer), "writer-" + w);
            threads[w].start();
        }
    }

    private void run(int w, boolean attached, long seed) {
        java.util.SplittableRandom random = new java.util.SplittableRandom(seed);
        int writers = threads.length;
        Vm on = null;
        Vcpu cpu = null;
        long seq = 0;
        try {
            while (!stop) {
                if (current.get() != on) {
                    on = current.get();
                    cpu = on.vcpu(w);
                    if (attached) {
                        cpu.attachThread();
                    }
                }
                int p = w + writers * random.nextInt(pages / writers); // this writer's pages only
                long value = ((long) (w + 1) << 48) | ++seq;
                int offset = random.nextBoolean() ? 0 : 8 * random.nextInt(512); // the first word is journaled
                try {
                    cpu.writeLong(page(p) + offset, value);
                } catch (IllegalStateException destroyed) { // the VM went away under us: follow it
                    if (attached && Vcpu.current() == cpu) {
                        cpu.detachThread();
                    }
                    Vm gone = on;
                    while (current.get() == gone && !stop) {
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
            if (attached && cpu != null && Vcpu.current() == cpu) {
                cpu.detachThread();
            }
        }
    }

    /** The writers carry on with {@code next} once the VM they write is destroyed. */
    void follow(Vm next) {
        current.set(next);
    }

    /** Waits until every writer completed {@code n} more writes than it had. */
    void awaitWrites(long n) throws InterruptedException {
        long[] from = new long[writes.length];
        for (int w = 0; w < writes.length; w++) {
            from[w] = writes[w].get();
        }
        long deadline = System.nanoTime() + 30_000_000_000L;
        for (int w = 0; w < writes.length; w++) {
            while (writes[w].get() < from[w] + n) {
                checkFailures();
                if (System.nanoTime() > deadline) {
                    throw new AssertionError("writer " + w + " made no progress");
                }
                Thread.sleep(1);
            }
        }
    }

    long writesOnFollowedVm() {
        return writesOnFollowed.get();
    }

    /** The value each page's first word must hold: the last one its writer completed there (0 if none). */
    long expected(int p) {
        return journal[p % threads.length][p];
    }

    void stop() throws InterruptedException {
        stop = true;
        if (vm.paused()) {
            vm.resume(); // a test that failed half-way: let writers parked in the source finish
        }
        for (Thread t : threads) {
            if (t != null) {
                t.join();
            }
        }
        checkFailures();
    }

    private void checkFailures() {
        for (int w = 0; w < threads.length; w++) {
            if (failures.get(w) != null) {
                throw new AssertionError("writer " + w + " failed", failures.get(w));
            }
        }
    }

    @Override
    public void close() throws InterruptedException {
        stop();
    }
}
