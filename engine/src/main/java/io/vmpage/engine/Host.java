package io.vmpage.engine;

import io.vmpage.mmu.MachineMemory;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A physical host: machine memory, its frame table, and the VMs running on it. The engine's entry point
 * for an embedding program:
 * <pre>{@code
 * try (Host host = Host.create(256L << 20)) {
 *     Vm vm = host.createVm(VmConfig.of(64L << 20).withPaging(PagingMode.NESTED));
 *     ...
 * }
 * }</pre>
 */
public final class Host implements AutoCloseable {
    private final MachineMemory memory;
    private final FrameTable frames;
    private final List<Vm> vms = new ArrayList<>();
    private final AtomicInteger nextVmId = new AtomicInteger(1);
    private final AtomicInteger nextVpid = new AtomicInteger(1);

    private Host(MachineMemory memory) {
        this.memory = memory;
        this.frames = new FrameTable(memory, 1); // frame 0 stays unused: a zero MFN never means "a real page"
    }

    /** A host with {@code memoryBytes} of machine memory. */
    public static Host create(long memoryBytes) {
        return new Host(MachineMemory.allocate(memoryBytes));
    }

    public MachineMemory memory() {
        return memory;
    }

    public FrameTable frames() {
        return frames;
    }

    /** Creates a VM; its guest memory is allocated on first touch. */
    public synchronized Vm createVm(VmConfig config) {
        int id = nextVmId.getAndIncrement();
        if (id > 0xFFFF) {
            throw new IllegalStateException("no VM ids left");
        }
        Vm vm = new Vm(this, id, config);
        vms.add(vm);
        return vm;
    }

    /** Destroys a VM and returns its frames. Its vCPUs must have stopped running. */
    public synchronized void destroyVm(Vm vm) {
        if (vms.remove(vm)) {
            vm.destroy();
        }
    }

    public synchronized List<Vm> vms() {
        return Collections.unmodifiableList(new ArrayList<>(vms));
    }

    int allocateVpid() {
        int vpid = nextVpid.getAndIncrement();
        if (vpid > 0xFFFF) {
            throw new IllegalStateException("no VPIDs left");
        }
        return vpid;
    }

    /** A zeroed host frame for a paging structure (EPT or shadow table), charged to {@code vmId}. */
    long allocateTableFrame(int vmId) {
        long frame = frames.allocate(vmId, FrameTable.TYPE_HOST_TABLE);
        if (frame < 0) {
            throw new HostOutOfMemoryException("host out of machine frames for a paging structure");
        }
        return frame;
    }

    @Override
    public synchronized void close() {
        for (Vm vm : new ArrayList<>(vms)) {
            destroyVm(vm);
        }
        memory.close();
    }
}
