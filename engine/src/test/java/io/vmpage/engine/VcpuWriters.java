package io.vmpage.engine;

import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Test fixture: one thread per vCPU that writes without pausing until {@link #close}, driving its vCPU
 * attached ({@link Vcpu#attachThread}) or with one-off accesses from a thread that does not run it.
 * {@link #close} stops and joins them and fails when a writer failed.
 */
public final class VcpuWriters implements AutoCloseable {
    /** The {@code n}-th write of the writer running {@code cpu}. */
    public interface Write {
        void write(Vcpu cpu, long n);
    }

    private final AtomicBoolean stop = new AtomicBoolean();
    private final AtomicReference<Throwable> failure = new AtomicReference<>();
    private final Thread[] threads;

    private VcpuWriters(Vm vm, int count, Driving driving, Write write) {
        threads = new Thread[count];
        for (int w = 0; w < count; w++) {
            Vcpu cpu = vm.vcpu(w);
            threads[w] = new Thread(() -> {
                if (driving == Driving.ATTACHED) {
                    cpu.attachThread();
                }
                try {
                    for (long n = 0; !stop.get(); n++) {
                        write.write(cpu, n);
                    }
                } catch (Throwable t) {
                    failure.compareAndSet(null, t);
                } finally {
                    if (Vcpu.current() == cpu) {
                        cpu.detachThread();
                    }
                }
            }, "writer-vm" + vm.id() + "-vcpu" + w);
        }
    }

    /** Starts writers on vCPUs 0 .. {@code count - 1} of {@code vm}. */
    public static VcpuWriters start(Vm vm, int count, Driving driving, Write write) {
        VcpuWriters writers = new VcpuWriters(vm, count, driving, write);
        for (Thread t : writers.threads) {
            t.start();
        }
        return writers;
    }

    @Override
    public void close() throws InterruptedException {
        stop.set(true);
        for (Thread t : threads) {
            t.join();
        }
        if (failure.get() != null) {
            throw new AssertionError("a writer failed", failure.get());
        }
    }
}
