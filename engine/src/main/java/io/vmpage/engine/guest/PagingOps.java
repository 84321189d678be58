package io.vmpage.engine.guest;

import io.vmpage.engine.Vcpu;
import io.vmpage.engine.Vm;
import io.vmpage.mmu.ControlRegisters;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Pte;

/**
 * How the guest kernel touches its paging structures (Linux's {@code pv_ops.mmu}): native stores and
 * instructions under nested and shadow paging, hypercalls under paravirtual paging. All accesses run on
 * the given vCPU in supervisor mode.
 */
interface PagingOps {
    /** The entry at {@code index} of the table in guest frame {@code tableGfn}. */
    long readEntry(Vcpu cpu, long tableGfn, int index);

    /** Replaces that entry. */
    void writeEntry(Vcpu cpu, long tableGfn, int index, long value);

    /** The frame number an entry must hold to reach guest frame {@code gfn}. */
    long entryFrame(Vcpu cpu, long gfn);

    /** The guest frame an entry points at. */
    long frameOfEntry(long entry);

    /** Readies a fresh (zeroed) frame to serve as a level-{@code level} table. */
    void prepareTable(Vcpu cpu, long gfn, int level);

    /** Loads CR3 with the table in {@code rootGfn} and {@code pcid}, keeping that PCID's entries when {@code noFlush}. */
    void loadCr3(Vcpu cpu, long rootGfn, int pcid, boolean noFlush);

    void invlpg(Vcpu cpu, long va);

    /** Zero-fills guest frame {@code gfn} (clear_page). */
    void zeroFrame(Vcpu cpu, long gfn);

    /** Guest frame {@code gfn} goes back to the kernel's free list (a table frame loses its table role). */
    void releaseFrame(Vcpu cpu, long gfn);

    /**
     * Free guest frame {@code gfn} goes to the balloon: whatever maps it in the kernel's own tables goes
     * first (paravirtual: its direct-map entry, and the kernel forgets its machine frame, as Linux's Xen
     * balloon does before {@code XENMEM_decrease_reservation}). Nothing under nested and shadow paging:
     * the kernel's direct map names guest frames, and the host unmaps the frame behind it.
     */
    default void giveToBalloon(Vcpu cpu, long gfn) {
    }

    /** What these operations know beyond guest memory, for {@link GuestKernel#saveState}. */
    default void saveState(java.io.DataOutputStream out) throws java.io.IOException {
    }

    /** Boots {@code vm}'s page tables the way its mode needs and returns the matching operations. */
    static PagingOps forVm(Vm vm, Boot boot) {
        return switch (vm.pagingMode()) {
            case NESTED, SHADOW -> new Native();
            case PARAVIRTUAL -> new Paravirtual(boot);
        };
    }

    /**
     * Xen PV: entries hold machine frame numbers, table writes are validated {@code mmu_update}
     * hypercalls, CR3 loads and INVLPG are {@code mmuext} operations. A frame is populated
     * ({@code populate_physmap}) and entered into the direct map when the kernel first allocates it; a
     * frame that becomes a page table is first remapped read-only there, and a new PML4 is pinned.
     * The kernel keeps the machine-to-physical table it needs to read entries back (Xen's M2P).
     */
    final class Paravirtual implements PagingOps {
        private final long[] directMapTables;
        private final org.agrona.collections.Long2LongHashMap machineToPhysical = new org.agrona.collections.Long2LongHashMap(-1);
        private final org.agrona.collections.Long2LongHashMap physicalToMachine = new org.agrona.collections.Long2LongHashMap(-1);

        Paravirtual(Boot boot) {
            this.directMapTables = boot.directMapTables();
        }

        private Paravirtual(long[] directMapTables) {
            this.directMapTables = directMapTables;
        }

        /** The direct map's tables, and the guest frames this guest populated (not their machine frames: those are the host's). */
        @Override
        public void saveState(java.io.DataOutputStream out) throws java.io.IOException {
            out.writeInt(directMapTables.length);
            for (long gfn : directMapTables) {
                out.writeLong(gfn);
            }
            long[] known = new long[physicalToMachine.size()];
            int[] n = {0};
            physicalToMachine.forEachLong((gfn, mfn) -> known[n[0]++] = gfn);
            java.util.Arrays.sort(known);
            out.writeInt(known.length);
            for (long gfn : known) {
                out.writeLong(gfn);
            }
        }

        /**
         * The operations {@link #saveState} saved, on the destination {@code vm}: the guest's P2M and M2P are
         * rebuilt from where its frames are now (Xen's restore rewrites the guest's P2M the same way).
         */
        static Paravirtual restore(Vm vm, java.io.DataInputStream in) throws java.io.IOException {
            int tables = in.readInt();
            if (tables < 0 || tables > vm.physicalMap().frames()) {
                throw new IllegalArgumentException("a paravirtual kernel state with " + tables + " direct-map tables");
            }
            long[] direct = new long[tables];
            for (int i = 0; i < tables; i++) {
                direct[i] = in.readLong();
            }
            Paravirtual ops = new Paravirtual(direct);
            int known = in.readInt();
            if (known < 0 || known > vm.physicalMap().frames()) {
                throw new IllegalArgumentException("a paravirtual kernel state with " + known + " populated frames");
            }
            for (int i = 0; i < known; i++) {
                long gfn = in.readLong();
                long mfn = vm.physicalMap().contains(gfn) ? vm.physicalMap().machineFrame(gfn) : -1;
                if (mfn < 0) {
                    throw new IllegalArgumentException("the paravirtual guest had guest frame " + gfn + ", which is not here");
                }
                ops.physicalToMachine.put(gfn, mfn);
                ops.machineToPhysical.put(mfn, gfn);
            }
            return ops;
        }

        private long mfn(Vcpu cpu, long gfn) {
            long mfn = physicalToMachine.get(gfn);
            if (mfn < 0) {
                mfn = cpu.hypercalls().machineFrame(gfn);
                if (mfn < 0) {
                    throw new IllegalStateException("guest frame 0x" + Long.toHexString(gfn) + " is not populated");
                }
                physicalToMachine.put(gfn, mfn);
                machineToPhysical.put(mfn, gfn);
            }
            return mfn;
        }

        private void update(Vcpu cpu, long tableGfn, int index, long value) {
            io.vmpage.engine.Hypercalls h = cpu.hypercalls();
            if (!h.mmuUpdate((mfn(cpu, tableGfn) << MachineMemory.FRAME_SHIFT) + ((long) index << 3), value)) {
                throw new IllegalStateException("the hypervisor refused a page-table update: " + h.lastError());
            }
        }

        /** Points guest frame {@code gfn}'s direct-map entry at its machine frame, writable or not. */
        private void mapDirect(Vcpu cpu, long gfn, boolean writable) {
            long flags = Pte.P | Pte.G | Pte.NX | Pte.A | Pte.D | (writable ? Pte.RW : 0);
            update(cpu, directMapTables[(int) (gfn >>> 9)], (int) (gfn & 511), Pte.entry(mfn(cpu, gfn) << 12, flags));
        }

        @Override
        public long readEntry(Vcpu cpu, long tableGfn, int index) {
            return io.vmpage.engine.Hypercalls.guestView(cpu.readLong(Native.directMap(tableGfn, index)));
        }

        @Override
        public void writeEntry(Vcpu cpu, long tableGfn, int index, long value) {
            update(cpu, tableGfn, index, value);
        }

        @Override
        public long entryFrame(Vcpu cpu, long gfn) {
            return mfn(cpu, gfn);
        }

        @Override
        public long frameOfEntry(long entry) {
            long gfn = machineToPhysical.get((entry & Pte.ADDRESS_MASK) >>> MachineMemory.FRAME_SHIFT);
            if (gfn < 0) {
                throw new IllegalStateException("entry 0x" + Long.toHexString(entry) + " names a machine frame this guest never had");
            }
            return gfn;
        }

        @Override
        public void prepareTable(Vcpu cpu, long gfn, int level) {
            mapDirect(cpu, gfn, false); // page-table pages are never writable by the guest
            if (level == Pte.LEVEL_PML4) {
                io.vmpage.engine.Hypercalls h = cpu.hypercalls();
                if (!h.pinTable(level, mfn(cpu, gfn))) {
                    throw new IllegalStateException("the hypervisor refused to pin a PML4: " + h.lastError());
                }
            }
        }

        @Override
        public void loadCr3(Vcpu cpu, long rootGfn, int pcid, boolean noFlush) {
            io.vmpage.engine.Hypercalls h = cpu.hypercalls();
            long cr3 = (mfn(cpu, rootGfn) << MachineMemory.FRAME_SHIFT) | pcid | (noFlush ? ControlRegisters.CR3_NO_FLUSH : 0);
            if (!h.newBasePtr(cr3)) {
                throw new IllegalStateException("the hypervisor refused a base pointer: " + h.lastError());
            }
        }

        @Override
        public void invlpg(Vcpu cpu, long va) {
            cpu.hypercalls().invlpgLocal(va);
        }

        @Override
        public void zeroFrame(Vcpu cpu, long gfn) {
            if (physicalToMachine.get(gfn) < 0) { // first use of this frame: populate it and map it
                long mfn = cpu.hypercalls().populatePhysmap(gfn);
                physicalToMachine.put(gfn, mfn);
                machineToPhysical.put(mfn, gfn);
                mapDirect(cpu, gfn, true);
            }
            Native.zero(cpu, gfn);
        }

        @Override
        public void releaseFrame(Vcpu cpu, long gfn) {
        }

        @Override
        public void giveToBalloon(Vcpu cpu, long gfn) {
            long mfn = physicalToMachine.get(gfn);
            if (mfn < 0) {
                return; // never populated: nothing maps it
            }
            update(cpu, directMapTables[(int) (gfn >>> 9)], (int) (gfn & 511), 0);
            physicalToMachine.remove(gfn);
            machineToPhysical.remove(mfn);
        }
    }

    /** Plain stores through the direct map and native MOV CR3 / INVLPG. */
    final class Native implements PagingOps {
        static long directMap(long gfn, int index) {
            return GuestKernel.DIRECT_MAP + (gfn << MachineMemory.FRAME_SHIFT) + ((long) index << 3);
        }

        @Override
        public long readEntry(Vcpu cpu, long tableGfn, int index) {
            return cpu.readLong(directMap(tableGfn, index));
        }

        @Override
        public void writeEntry(Vcpu cpu, long tableGfn, int index, long value) {
            cpu.writeLong(directMap(tableGfn, index), value);
        }

        @Override
        public long entryFrame(Vcpu cpu, long gfn) {
            return gfn;
        }

        @Override
        public long frameOfEntry(long entry) {
            return (entry & Pte.ADDRESS_MASK) >>> MachineMemory.FRAME_SHIFT;
        }

        @Override
        public void prepareTable(Vcpu cpu, long gfn, int level) {
        }

        @Override
        public void loadCr3(Vcpu cpu, long rootGfn, int pcid, boolean noFlush) {
            cpu.loadCr3((rootGfn << MachineMemory.FRAME_SHIFT) | pcid | (noFlush ? ControlRegisters.CR3_NO_FLUSH : 0));
        }

        @Override
        public void invlpg(Vcpu cpu, long va) {
            cpu.invlpg(va);
        }

        @Override
        public void zeroFrame(Vcpu cpu, long gfn) {
            zero(cpu, gfn);
        }

        /** clear_page through the direct map. */
        static void zero(Vcpu cpu, long gfn) {
            long base = directMap(gfn, 0);
            for (int i = 0; i < MachineMemory.FRAME_SIZE; i += 8) {
                cpu.writeLong(base + i, 0);
            }
        }

        @Override
        public void releaseFrame(Vcpu cpu, long gfn) {
        }
    }
}
