package io.vmpage.bench.jmh;

import io.vmpage.engine.Host;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.guest.GuestKernel;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * The fixed cost of a migration's switch-over with no dirty pages left, 4 vCPUs: pause the running VM,
 * export its vCPU state, import it into the paused VM on the other host, resume that one; the next
 * operation switches back. With {@code writers=4} each VM's four vCPUs are driven by their own threads
 * that write without pause (the pause must kick them out; on this 2-core machine they compete for the
 * cores with the switching thread). Baseline: {@code pauseResume}, one VM paused and resumed, the part
 * of the switch-over that moves no state.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
public class SwitchOverBench {
    private static final int VCPUS = 4;
    private static final long HEAP = 0x0000_6000_0000_0000L;

    @Param({"0", "4"})
    public int writers;

    private Host hostA;
    private Host hostB;
    private Vm running;
    private Vm paused;
    private Thread[] threads;
    private volatile boolean stop;
    /** Writes done by the writer threads; a writer's failure, if any. */
    private final java.util.concurrent.atomic.AtomicLong writes = new java.util.concurrent.atomic.AtomicLong();
    private final java.util.concurrent.atomic.AtomicReference<Throwable> failed = new java.util.concurrent.atomic.AtomicReference<>();

    @Setup(Level.Trial)
    public void setUp() {
        hostA = Host.create(64L << 20);
        hostB = Host.create(64L << 20);
        VmConfig config = VmConfig.of(16L << 20).withVcpus(VCPUS);
        running = hostA.createVm(config);
        paused = hostB.createVm(config);
        // The guest kernel maps a heap page per vCPU in one address space every vCPU runs in; the other VM
        // gets a copy of that memory and the vCPU state, as a migration would leave it.
        GuestKernel kernel = GuestKernel.boot(running);
        Vcpu cpu0 = running.vcpu(0);
        GuestKernel.AddressSpace space = kernel.createAddressSpace(cpu0);
        cpu0.run(() -> kernel.mmap(space, HEAP, VCPUS * 4096L, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE));
        for (Vcpu cpu : running.vcpus()) {
            cpu.run(() -> kernel.switchTo(cpu, space));
            cpu.run(() -> cpu.writeLong(HEAP + cpu.index() * 4096L, 1));
        }
        running.pause();
        paused.pause();
        byte[] page = new byte[4096];
        for (long gfn = 0; gfn < running.physicalMap().frames(); gfn++) {
            if (running.physicalMap().machineFrame(gfn) >= 0) {
                running.readPhysical(gfn << 12, page, 0, page.length);
                paused.writePhysical(gfn << 12, page, 0, page.length);
            }
        }
        paused.importState(running.exportState());
        running.resume();
        threads = new Thread[2 * writers];
        for (int t = 0; t < threads.length; t++) {
            Vm vm = t < writers ? running : paused;
            int index = t % writers;
            threads[t] = new Thread(() -> write(vm.vcpu(index), HEAP + index * 4096L), "switch-over-writer-" + t);
            threads[t].setDaemon(true);
            threads[t].start();
        }
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (writers > 0 && writes.get() < 100_000) { // the running VM's writers run before anything is measured
            if (failed.get() != null || System.nanoTime() > deadline) {
                throw new IllegalStateException("the writers did not run: " + writes.get() + " writes", failed.get());
            }
            Thread.onSpinWait();
        }
    }

    /** A vCPU thread writing its heap page without pause. */
    private void write(Vcpu cpu, long va) {
        try {
            cpu.attachThread();
            try {
                for (long i = 0; !stop; i++) {
                    cpu.writeLong(va, i);
                    if ((i & 1023) == 0) {
                        writes.addAndGet(1024);
                    }
                }
            } finally {
                cpu.detachThread();
            }
        } catch (RuntimeException | Error e) {
            failed.compareAndSet(null, e);
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() throws InterruptedException {
        stop = true;
        paused.resume(); // its writers are held inside an access: let them see the stop
        for (Thread t : threads) {
            t.join(10_000);
        }
        if (failed.get() != null) {
            throw new IllegalStateException("a writer failed", failed.get());
        }
        hostA.close();
        hostB.close();
    }

    @Benchmark
    public Vm pauseResume() {
        running.pause();
        running.resume();
        return running;
    }

    @Benchmark
    @Baseline("pauseResume")
    public Vm switchOver() {
        running.pause();
        paused.importState(running.exportState());
        paused.resume();
        Vm was = running;
        running = paused;
        paused = was;
        return running;
    }
}
