package io.vmpage.engine;

import io.vmpage.engine.guest.GuestKernel;
import io.vmpage.mmu.Access;
import io.vmpage.mmu.MachineMemory;

/**
 * Test fixture for dirty logging: a booted guest kernel in any paging mode with one address space in
 * which {@code pages} user pages are mapped and touched (populated before any logging starts), every
 * vCPU switched to it, and the guest frame behind each page known.
 */
public final class LoggedGuest implements AutoCloseable {
    public static final long HEAP = 0x0000_6000_0000_0000L;

    public final Host host;
    private final boolean ownsHost;
    public final Vm vm;
    public final GuestKernel kernel;
    public final GuestKernel.AddressSpace space;
    public final long[] gfnOfPage;

    public LoggedGuest(PagingMode mode, int vcpus, int pages) {
        this(Host.create(64L << 20), true, mode, vcpus, pages);
    }

    /** A guest on {@code host}, which the caller closes. */
    public LoggedGuest(Host host, PagingMode mode, int vcpus, int pages) {
        this(host, false, mode, vcpus, pages);
    }

    private LoggedGuest(Host host, boolean ownsHost, PagingMode mode, int vcpus, int pages) {
        this.host = host;
        this.ownsHost = ownsHost;
        vm = host.createVm(VmConfig.of(24L << 20).withPaging(mode).withVcpus(vcpus));
        kernel = GuestKernel.boot(vm);
        Vcpu cpu0 = vm.vcpu(0);
        space = kernel.createAddressSpace(cpu0);
        kernel.mmap(space, HEAP, pages * 4096L, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE);
        gfnOfPage = new long[pages];
        for (Vcpu cpu : vm.vcpus()) {
            cpu.run(() -> kernel.switchTo(cpu, space));
        }
        cpu0.run(() -> {
            for (int p = 0; p < pages; p++) {
                cpu0.writeLong(page(p), p);
                long hpa = cpu0.translate(page(p), Access.READ);
                gfnOfPage[p] = host.frames().guestFrame(hpa >>> MachineMemory.FRAME_SHIFT);
            }
        });
    }

    /**
     * A VM on {@code host} with this guest's configuration and memory: every populated frame copied,
     * except the frames {@code remote} names, which are marked not here yet ({@link Vm#markRemote}), as a
     * post-copy destination holds them. This guest should be paused; the vCPU state is not moved.
     */
    public Vm copyTo(Host host, java.util.function.LongPredicate remote) {
        Vm copy = host.createVm(vm.config());
        byte[] page = new byte[MachineMemory.FRAME_SIZE];
        for (long gfn = 0; gfn < vm.physicalMap().frames(); gfn++) {
            if (remote.test(gfn)) {
                copy.markRemote(gfn);
            } else if (vm.physicalMap().machineFrame(gfn) >= 0) {
                vm.readPhysical(gfn << MachineMemory.FRAME_SHIFT, page, 0, page.length);
                copy.writePhysical(gfn << MachineMemory.FRAME_SHIFT, page, 0, page.length);
            }
        }
        return copy;
    }

    public static long page(int p) {
        return HEAP + p * 4096L;
    }

    public long exits(ExitReason reason) {
        return vm.exits().get(reason);
    }

    /** The whole of guest-physical memory. */
    public byte[] memory() {
        byte[] bytes = new byte[(int) vm.memorySize()];
        vm.readPhysical(0, bytes, 0, bytes.length);
        return bytes;
    }

    @Override
    public void close() {
        if (ownsHost) {
            host.close();
        }
    }
}
