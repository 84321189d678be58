package io.vmpage.engine.guest;

import io.vmpage.engine.GuestFaultException;
import io.vmpage.engine.Vcpu;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

/**
 * A seeded, deterministic guest program run by the {@link GuestKernel} on one vCPU: processes (address
 * spaces) that map, unmap and protect ranges, context-switch, and read and write memory. Everything the
 * program observes (each value read, each fault with its type, error code and address) goes into a
 * trace, so two runs of the same program in different paging modes can be compared observation by
 * observation.
 *
 * <p>The mix of operations is a {@link Mix}: page-table churn makes shadow paging pay (every guest
 * page-table write traps, every CR3 load exits), a large working set with rare table changes makes
 * nested paging pay (every TLB miss is a 2D walk).
 */
public final class GuestProgram {
    /** Base of the program's heap in each address space. */
    public static final long HEAP = 0x0000_5555_0000_0000L;
    private static final int SLOT_PAGES = 8;

    /**
     * Relative weights of the operations, and the layout they work on.
     *
     * @param slots regions of {@value #SLOT_PAGES} pages per address space that map/unmap pick from
     */
    public record Mix(String name, int processes, int slots, int read, int write, int map, int unmap, int protect,
                      int contextSwitch) {
        /** Page-table updates and context switches dominate: shadow paging's worst case. */
        public static final Mix CHURN = new Mix("churn", 4, 64, 20, 20, 15, 15, 10, 20);
        /** Accesses over a working set far larger than the TLB, every page mapped, tables never change: nested paging's worst case. */
        public static final Mix TLB = new Mix("tlb", 1, 1024, 50, 50, 0, 0, 0, 0);
        /** A bit of everything. */
        public static final Mix MIXED = new Mix("mixed", 3, 128, 40, 40, 6, 5, 4, 5);

        public static Mix named(String name) {
            for (Mix m : new Mix[] {CHURN, TLB, MIXED}) {
                if (m.name.equals(name)) {
                    return m;
                }
            }
            throw new IllegalArgumentException("workload '" + name + "' is not one of churn, tlb, mixed");
        }

        int total() {
            return read + write + map + unmap + protect + contextSwitch;
        }
    }

    /** What a run observed. */
    public record Trace(long[] observations, int count, long faults, long operations) {
        /** The observations in order. */
        public long[] values() {
            return java.util.Arrays.copyOf(observations, count);
        }
    }

    private final GuestKernel kernel;
    private final Vcpu cpu;
    private final Mix mix;
    /** The operations' random source; replaced once by {@link #restore}. */
    private Random random;
    private final List<GuestKernel.AddressSpace> spaces = new ArrayList<>();
    private final boolean[][] mapped;
    private final boolean[][] writable;
    private int current;
    private long[] trace = new long[1024];
    private int traceLength;
    private long faults;

    public GuestProgram(GuestKernel kernel, Mix mix, long seed) {
        this.kernel = kernel;
        this.cpu = kernel.vm().vcpu(0);
        this.mix = mix;
        this.random = new Random(seed);
        this.mapped = new boolean[mix.processes()][mix.slots()];
        this.writable = new boolean[mix.processes()][mix.slots()];
    }

    private static final int STATE_MAGIC = 0x4750_5331; // "GPS1"

    /**
     * Everything the program holds outside guest memory (its mix, its random generator's state, its
     * processes as the kernel's address spaces, what it believes is mapped and writable, which process
     * runs, and its trace so far), as device state for a migration: {@link #restore} on the destination
     * carries on with exactly the operations it would have run here. Call between {@link #run}s.
     */
    public byte[] saveState() {
        java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
        try (java.io.ObjectOutputStream out = new java.io.ObjectOutputStream(bytes)) {
            out.writeInt(STATE_MAGIC);
            out.writeUTF(mix.name());
            for (int v : new int[] {mix.processes(), mix.slots(), mix.read(), mix.write(), mix.map(), mix.unmap(), mix.protect(),
                mix.contextSwitch()}) {
                out.writeInt(v);
            }
            out.writeObject(random); // java.util.Random serializes its seed
            out.writeInt(spaces.size());
            for (GuestKernel.AddressSpace space : spaces) {
                out.writeInt(kernel.indexOf(space));
            }
            out.writeObject(mapped);
            out.writeObject(writable);
            out.writeInt(current);
            out.writeObject(java.util.Arrays.copyOf(trace, traceLength));
            out.writeLong(faults);
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
        return bytes.toByteArray();
    }

    /**
     * The program {@link #saveState} saved, running on {@code kernel} ({@link GuestKernel#restore} of the
     * same migration).
     *
     * @throws IllegalArgumentException when {@code state} is not a program state for this kernel
     */
    public static GuestProgram restore(GuestKernel kernel, byte[] state) {
        try (java.io.ObjectInputStream in = new java.io.ObjectInputStream(new java.io.ByteArrayInputStream(state)) {
            @Override
            protected Class<?> resolveClass(java.io.ObjectStreamClass desc) throws java.io.IOException, ClassNotFoundException {
                String name = desc.getName();
                if (!name.equals("java.util.Random") && !name.equals("[Z") && !name.equals("[[Z") && !name.equals("[J")) {
                    throw new java.io.InvalidClassException(name, "not part of a guest program's state"); // no gadget chains
                }
                return super.resolveClass(desc);
            }
        }) {
            if (in.readInt() != STATE_MAGIC) {
                throw new IllegalArgumentException("not a guest program state");
            }
            String name = in.readUTF();
            int[] v = new int[8];
            for (int i = 0; i < v.length; i++) {
                v[i] = in.readInt();
            }
            Mix mix = new Mix(name, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
            GuestProgram program = new GuestProgram(kernel, mix, 0);
            java.util.Random random = (java.util.Random) in.readObject();
            int n = in.readInt();
            if (n < 0 || n > mix.processes()) {
                throw new IllegalArgumentException("a guest program state with " + n + " processes for a mix of " + mix.processes());
            }
            for (int i = 0; i < n; i++) {
                program.spaces.add(kernel.space(in.readInt()));
            }
            boolean[][] mapped = (boolean[][]) in.readObject();
            boolean[][] writable = (boolean[][]) in.readObject();
            for (int p = 0; p < mix.processes(); p++) {
                System.arraycopy(mapped[p], 0, program.mapped[p], 0, mix.slots());
                System.arraycopy(writable[p], 0, program.writable[p], 0, mix.slots());
            }
            program.current = in.readInt();
            long[] trace = (long[]) in.readObject();
            program.trace = java.util.Arrays.copyOf(trace, Math.max(1024, trace.length));
            program.traceLength = trace.length;
            program.faults = in.readLong();
            program.randomState(random);
            return program;
        } catch (java.io.IOException | ClassNotFoundException | ClassCastException | IndexOutOfBoundsException e) {
            throw new IllegalArgumentException("a malformed guest program state: " + e, e);
        }
    }

    /**
     * Creates the processes and maps half of each one's slots, touching every page of them, so that
     * {@link #run} starts from a steady state (no first-touch faults left in the initial mappings).
     */
    public GuestProgram prepare() {
        cpu.run(() -> {
            for (int p = 0; p < mix.processes(); p++) {
                GuestKernel.AddressSpace space = kernel.createAddressSpace(cpu);
                spaces.add(space);
                kernel.switchTo(cpu, space);
                for (int s = 0; s < mix.slots(); s++) {
                    if (s % 2 == 0 || mix.map() == 0) {
                        kernel.mmap(space, slotVa(s), SLOT_PAGES * 4096L, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE);
                        mapped[p][s] = true;
                        writable[p][s] = true;
                        for (int page = 0; page < SLOT_PAGES; page++) {
                            cpu.writeLong(slotVa(s) + page * 4096L, 0);
                        }
                    }
                }
            }
            kernel.switchTo(cpu, spaces.get(0));
        });
        return this;
    }

    /** Runs {@code operations} operations (preparing first if {@link #prepare} was not called) and returns the trace. */
    public Trace run(int operations) {
        if (spaces.isEmpty()) {
            prepare();
        }
        cpu.run(() -> {
            for (int i = 0; i < operations; i++) {
                step();
            }
        });
        return new Trace(trace, traceLength, faults, operations);
    }

    private void randomState(Random restored) {
        this.random = restored;
    }

    private static long slotVa(int slot) {
        return HEAP + (long) slot * SLOT_PAGES * 4096L * 2; // a guard gap after every slot
    }

    private void step() {
        int pick = random.nextInt(mix.total());
        int slot = random.nextInt(mix.slots());
        long va = slotVa(slot) + (long) random.nextInt(SLOT_PAGES) * 4096 + 8L * random.nextInt(512);
        GuestKernel.AddressSpace space = spaces.get(current);
        if ((pick -= mix.read()) < 0) {
            access(va, false, 0);
        } else if ((pick -= mix.write()) < 0) {
            access(va, true, random.nextLong());
        } else if ((pick -= mix.map()) < 0) {
            if (!mapped[current][slot]) {
                kernel.mmap(space, slotVa(slot), SLOT_PAGES * 4096L, GuestKernel.PROT_READ | GuestKernel.PROT_WRITE);
                mapped[current][slot] = true;
                writable[current][slot] = true;
            }
        } else if ((pick -= mix.unmap()) < 0) {
            if (mapped[current][slot]) {
                kernel.munmap(cpu, space, slotVa(slot), SLOT_PAGES * 4096L);
                mapped[current][slot] = false;
            }
        } else if ((pick -= mix.protect()) < 0) {
            if (mapped[current][slot]) {
                writable[current][slot] = !writable[current][slot];
                kernel.mprotect(cpu, space, slotVa(slot), SLOT_PAGES * 4096L,
                    GuestKernel.PROT_READ | (writable[current][slot] ? GuestKernel.PROT_WRITE : 0));
            }
        } else {
            current = random.nextInt(spaces.size());
            kernel.switchTo(cpu, spaces.get(current));
        }
    }

    private void access(long va, boolean write, long value) {
        cpu.setUserMode(true);
        try {
            if (write) {
                cpu.writeLong(va, value);
                record(value);
            } else {
                record(cpu.readLong(va));
            }
        } catch (GuestFaultException e) {
            faults++;
            record(0xFA017L << 40 | (long) e.fault() << 32 | e.errorCode());
            record(e.address());
        } finally {
            cpu.setUserMode(false);
        }
    }

    private void record(long observation) {
        if (traceLength == trace.length) {
            trace = java.util.Arrays.copyOf(trace, trace.length * 2);
        }
        trace[traceLength++] = observation;
    }
}
