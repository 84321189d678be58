package io.vmpage.engine.paging.pv;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.vmpage.engine.GuestFaultException;
import io.vmpage.engine.Host;
import io.vmpage.engine.Hypercalls;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.memory.FrameDescriptor;
import io.vmpage.engine.memory.FrameTable;
import io.vmpage.mmu.Access;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Pte;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A hostile guest throws random mmu_update batches, pins, unpins, base-pointer loads and accesses at the
 * engine; afterwards (and along the way) every table reachable from a root is checked: each present
 * entry points at a frame of this VM, tables are typed at the right level, no page-table frame is mapped
 * writable, the type counts match the references, and no vCPU translates a write to a table frame.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ParavirtualHostileGuestTest {
    private static final long MIB = 1L << 20;
    private static final int[] L4_INDEX = {0, 1, 255};
    private static final int[] LOW_INDEX = {0, 1, 2};
    private static final long[] FLAGS = {Pte.P, Pte.RW, Pte.US, Pte.PS, Pte.A, Pte.D, Pte.G, Pte.NX, Pte.PWT};

    private final Host host = Host.create(64 * MIB);

    @AfterEach
    void close() {
        host.close();
    }

    @ParameterizedTest
    @ValueSource(longs = {1, 2, 3, 42})
    void noSequenceOfHypercallsBreaksIsolation(long seed) {
        Random rnd = new Random(seed);
        Vm vm = host.createVm(VmConfig.of(16 * MIB).withPaging(PagingMode.PARAVIRTUAL).withVcpus(2));
        Vm victim = host.createVm(VmConfig.of(16 * MIB).withPaging(PagingMode.PARAVIRTUAL));
        ParavirtualPagingTest.Space victimSpace = new ParavirtualPagingTest.Space(victim);
        victimSpace.cpu.writeLong(ParavirtualPagingTest.VA, 0xC0FFEE);

        ParavirtualPagingTest.Space start = new ParavirtualPagingTest.Space(vm); // a working space to start from
        Hypercalls hc0 = vm.vcpu(0).hypercalls();
        List<Long> own = new ArrayList<>(List.of(start.l4, start.l3, start.l2, start.l1, start.data));
        for (long gfn = 0; gfn < 40; gfn++) {
            own.add(hc0.populatePhysmap(gfn));
        }
        List<Long> foreign = List.of(victimSpace.l4, victimSpace.l3, victimSpace.l2, victimSpace.l1, victimSpace.data, 0L,
            host.frames().frames() + 3);
        List<Long> vas = new ArrayList<>();
        for (int a : L4_INDEX) {
            for (int b : LOW_INDEX) {
                for (int c : LOW_INDEX) {
                    for (int d : LOW_INDEX) {
                        vas.add(((long) a << 39) | ((long) b << 30) | ((long) c << 21) | ((long) d << 12));
                    }
                }
            }
        }
        for (int i = 0; i < 4; i++) {
            vas.add(ParavirtualPagingTest.VA + ((long) i << 12));
        }
        Set<Long> pins = new HashSet<>(Set.of(start.l4));
        Set<Long> history = new java.util.LinkedHashSet<>(vas);
        long[] bases = {start.l4, -1};
        int applied = 0;
        int refused = 0;
        int reachable = 0;
        int discarded = 0;
        for (int op = 0; op < 4000; op++) {
            int vcpuIndex = rnd.nextInt(2);
            Vcpu cpu = vm.vcpu(vcpuIndex);
            Hypercalls hc = cpu.hypercalls();
            int kind = rnd.nextInt(100);
            if (kind < 65) {
                int n = 1 + rnd.nextInt(4);
                long[] ptrs = new long[n];
                long[] vals = new long[n];
                for (int i = 0; i < n; i++) {
                    long table = rnd.nextBoolean() ? knownTable(rnd, own) : pick(rnd, own, foreign);
                    int index = rnd.nextInt(4) == 0 ? rnd.nextInt(512) : rnd.nextInt(3) == 0
                        ? Pte.index(ParavirtualPagingTest.VA, 1 + rnd.nextInt(4)) + rnd.nextInt(2)
                        : (rnd.nextBoolean() ? L4_INDEX : LOW_INDEX)[rnd.nextInt(3)];
                    ptrs[i] = (table << MachineMemory.FRAME_SHIFT) + ((long) index << 3) + (rnd.nextInt(50) == 0 ? 4 : 0);
                    vals[i] = randomEntry(rnd, own, foreign);
                }
                int done = hc.mmuUpdate(ptrs, vals, n);
                applied += done;
                refused += done < n ? 1 : 0;
            } else if (kind < 73) {
                long frame = pick(rnd, own, foreign);
                if (hc.pinTable(1 + rnd.nextInt(4), frame)) {
                    assertTrue(pins.add(frame));
                }
            } else if (kind < 78) {
                long frame = pick(rnd, own, foreign);
                if (hc.unpinTable(frame)) {
                    assertTrue(pins.remove(frame));
                }
            } else if (kind < 86) {
                long frame = pick(rnd, own, foreign);
                if (hc.newBasePtr((frame << MachineMemory.FRAME_SHIFT) | rnd.nextInt(4))) {
                    bases[vcpuIndex] = frame;
                }
            } else if (kind < 90) {
                if (rnd.nextBoolean()) {
                    hc.invlpgAll(vas.get(rnd.nextInt(vas.size())));
                } else {
                    hc.tlbFlushLocal();
                }
            } else if (kind < 94) {
                // A discard (decrease_reservation) of a random frame: taken only when nothing maps it; the
                // guest then populates the guest frame afresh.
                int at = rnd.nextInt(own.size());
                long gfn = host.frames().guestFrame(own.get(at));
                if (gfn >= 0 && vm.discardFrame(gfn)) {
                    discarded++;
                    victimSpace.hc.populatePhysmap(0x400 + discarded); // the other VM takes the frame just given back
                    own.set(at, hc.populatePhysmap(gfn));
                }
            } else {
                List<Long> known = new ArrayList<>(history);
                long va = known.get(rnd.nextInt(known.size())) + 8L * rnd.nextInt(512);
                try {
                    if (rnd.nextBoolean()) {
                        cpu.readLong(va);
                    } else {
                        cpu.writeLong(va, randomEntry(rnd, own, foreign)); // plant table-looking garbage
                    }
                } catch (GuestFaultException expected) {
                    // no handler: the hostile guest just moves on
                }
            }
            if (op % 500 == 499) {
                reachable += checkIsolation(vm, own, pins, bases, history);
            }
        }
        reachable += checkIsolation(vm, own, pins, bases, history);
        System.out.println("hostile guest seed " + seed + ": " + applied + " updates applied, " + refused
            + " batches refused, " + discarded + " frames discarded, " + reachable + " translations checked");
        assertTrue(reachable > 0, "some of the random tables translated");
        assertTrue(discarded > 3, "unmapped frames were discarded: " + discarded);
        assertTrue(applied > 200 && refused > 200, "the run exercised both sides: applied " + applied + ", refused " + refused);
        assertEquals(0xC0FFEE, victimSpace.cpu.readLong(ParavirtualPagingTest.VA), "the other VM is untouched");
        assertEquals(ParavirtualPagingTest.entry(victimSpace.data, ParavirtualPagingTest.KERNEL),
            host.memory().getLong(ParavirtualPagingTest.entryPtr(victimSpace.l1, ParavirtualPagingTest.VA, 1)) & ~(Pte.A | Pte.D));
    }

    /** A frame that is a page table right now (a guest keeps track of its own tables), else any own frame. */
    private long knownTable(Random rnd, List<Long> own) {
        List<Long> tables = new ArrayList<>();
        for (long f : own) {
            if (tableLevel(FrameDescriptor.type(host.frames().descriptor(f))) != 0) {
                tables.add(f);
            }
        }
        return tables.isEmpty() ? own.get(rnd.nextInt(own.size())) : tables.get(rnd.nextInt(tables.size()));
    }

    private static long pick(Random rnd, List<Long> own, List<Long> foreign) {
        return rnd.nextInt(10) == 0 ? foreign.get(rnd.nextInt(foreign.size())) : own.get(rnd.nextInt(own.size()));
    }

    private static long randomEntry(Random rnd, List<Long> own, List<Long> foreign) {
        if (rnd.nextInt(5) == 0) {
            return 0;
        }
        long e = pick(rnd, own, foreign) << MachineMemory.FRAME_SHIFT;
        for (long flag : FLAGS) {
            if (rnd.nextInt(flag == Pte.P || flag == Pte.RW ? 10 : 5) < (flag == Pte.P ? 9 : flag == Pte.RW ? 5 : 1)) {
                e |= flag;
            }
        }
        if (rnd.nextInt(30) == 0) {
            e |= 1L << (46 + rnd.nextInt(6)); // reserved address bit
        }
        return e;
    }

    /** Walks every table from every root and checks isolation and the type accounting. */
    private int checkIsolation(Vm vm, List<Long> own, Set<Long> pins, long[] bases, Set<Long> history) {
        int[] reachable = {0};
        FrameTable ft = host.frames();
        Map<Long, Integer> expected = new HashMap<>();
        for (long pin : pins) {
            expected.merge(pin, 1, Integer::sum);
        }
        for (long base : bases) {
            if (base >= 0) {
                expected.merge(base, 1, Integer::sum);
                assertEquals(FrameDescriptor.TYPE_L4, FrameDescriptor.type(ft.descriptor(base)), "a loaded CR3 is a validated L4");
            }
        }
        // Every frame typed as a table holds validated entries; count the references they take.
        for (long f : own) {
            int level = tableLevel(FrameDescriptor.type(ft.descriptor(f)));
            if (level == 0) {
                continue;
            }
            for (int i = 0; i < 512; i++) {
                long e = host.memory().getLong((f << MachineMemory.FRAME_SHIFT) + 8L * i);
                if ((e & Pte.P) == 0) {
                    continue;
                }
                long target = (e & Pte.ADDRESS_MASK) >>> MachineMemory.FRAME_SHIFT;
                String where = "L" + level + " table " + f + " entry " + i + " = 0x" + Long.toHexString(e);
                assertTrue(target > 0 && target < ft.frames(), where + ": not a machine frame");
                long d = ft.descriptor(target);
                assertEquals(vm.id(), FrameDescriptor.owner(d), where + ": target not owned by the VM");
                assertFalse(FrameDescriptor.isFree(d), where + ": target was given back to the host");
                assertEquals(0, e & Pte.ADDRESS_MASK & ~((1L << 46) - 1), where + ": reserved bits");
                int targetType = FrameDescriptor.type(d);
                if (level == 1) {
                    if ((e & Pte.RW) != 0) {
                        assertEquals(FrameDescriptor.TYPE_WRITABLE, targetType, where + ": writable mapping of a non-writable-typed frame");
                        expected.merge(target, 1, Integer::sum);
                    }
                } else {
                    assertEquals(0, e & Pte.PS, where + ": superpage");
                    assertEquals(FrameDescriptor.TYPE_L1 + level - 2, targetType, where + ": target table level");
                    expected.merge(target, 1, Integer::sum);
                }
            }
        }
        for (long f : own) {
            long d = ft.descriptor(f);
            int count = FrameDescriptor.refs(d) - 1;
            assertEquals((int) expected.getOrDefault(f, 0), count, "type count of frame " + f + " ("
                + FrameDescriptor.typeName(FrameDescriptor.type(d)) + ")");
            if (count == 0) {
                assertEquals(FrameDescriptor.TYPE_DATA, FrameDescriptor.type(d), "untyped at count 0: frame " + f);
            }
        }
        // What the hardware of each vCPU (TLB included, after serving pending flushes) lets the guest write.
        for (Vcpu cpu : vm.vcpus()) {
            List<Long> mapped = new ArrayList<>();
            long base = bases[cpu.index()];
            if (base >= 0) {
                collectMapped(base, 4, 0, mapped);
            }
            history.addAll(mapped); // addresses mapped once: a stale TLB entry for one must not survive
            mapped.clear();
            mapped.addAll(history);
            cpu.run(() -> {
                for (long va : mapped) {
                    for (int access : new int[] {Access.READ, Access.WRITE}) {
                        long hpa = cpu.mmu().translate(va, access);
                        if (hpa < 0) {
                            continue;
                        }
                        reachable[0]++;
                        long frame = hpa >>> MachineMemory.FRAME_SHIFT;
                        long d = ft.descriptor(frame);
                        if (FrameDescriptor.owner(d) != vm.id() || FrameDescriptor.isFree(d)) {
                            fail(cpu + " reaches foreign frame " + frame + " at 0x" + Long.toHexString(va));
                        }
                        if (access == Access.WRITE && tableLevel(FrameDescriptor.type(d)) != 0) {
                            fail(cpu + " can write page-table frame " + frame + " at 0x" + Long.toHexString(va));
                        }
                    }
                }
            });
        }
        return reachable[0];
    }

    /** Adds the linear address of every present leaf under table {@code frame} (capped). */
    private void collectMapped(long frame, int level, long vaPrefix, List<Long> out) {
        for (int i = 0; i < 512 && out.size() < 2000; i++) {
            long e = host.memory().getLong((frame << MachineMemory.FRAME_SHIFT) + 8L * i);
            if ((e & Pte.P) == 0) {
                continue;
            }
            long va = vaPrefix | ((long) i << Pte.levelShift(level));
            if (level == 1) {
                out.add(va);
            } else {
                collectMapped((e & Pte.ADDRESS_MASK) >>> MachineMemory.FRAME_SHIFT, level - 1, va, out);
            }
        }
    }

    private static int tableLevel(int type) {
        return type >= FrameDescriptor.TYPE_L1 && type <= FrameDescriptor.TYPE_L4 ? type - FrameDescriptor.TYPE_L1 + 1 : 0;
    }
}
