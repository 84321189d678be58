package io.vmpage.engine.guest;

import io.vmpage.engine.Hypercalls;
import io.vmpage.engine.Vm;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.PageTables;
import io.vmpage.mmu.Pte;

/**
 * What the bootloader (or, for a paravirtual guest, the domain builder) leaves the kernel: page tables
 * mapping guest RAM at {@link GuestKernel#DIRECT_MAP} with 4 KiB pages (global, no-execute, as Linux
 * maps its physmap), in frames at the top of guest memory, and the list of frames still free. Guest
 * frame 0 stays unused, as the low page does on PCs.
 *
 * @param rootGfn guest frame of the kernel's PML4
 * @param directMapTables guest frame of the direct map's page table covering guest frames
 *        [512 i, 512 i + 512), for each i (the kernel edits these entries under paravirtual paging)
 */
record Boot(long rootGfn, long[] freeFrames, int freeCount, long[] directMapTables) {
    private static final long DIRECT_MAP_LEAF = Pte.P | Pte.RW | Pte.G | Pte.NX | Pte.A | Pte.D;

    /** Bootloader for nested and shadow paging: the whole direct map, entries holding guest frame numbers. */
    static Boot directMap(Vm vm) {
        Layout l = new Layout(vm);
        PageTables tables = vm.guestPageTables(l.areaStart << MachineMemory.FRAME_SHIFT, l.frames << MachineMemory.FRAME_SHIFT);
        for (long gfn = 0; gfn < l.frames; gfn++) {
            tables.map(GuestKernel.DIRECT_MAP + (gfn << MachineMemory.FRAME_SHIFT), gfn << MachineMemory.FRAME_SHIFT,
                Pte.SHIFT_4K, DIRECT_MAP_LEAF);
        }
        long[] pts = new long[(int) l.pts];
        for (int i = 0; i < pts.length; i++) {
            long leaf = tables.leafAddress(GuestKernel.DIRECT_MAP + ((long) i << 21));
            pts[i] = leaf >>> MachineMemory.FRAME_SHIFT;
        }
        return new Boot(tables.root() >>> MachineMemory.FRAME_SHIFT, l.free(), (int) (l.areaStart - 1), pts);
    }

    /**
     * Xen's domain builder for a paravirtual guest: the table frames are populated and filled with
     * machine frame numbers by host-side stores before the guest pins its PML4 (pinning validates them).
     * Only the tables themselves are mapped in the direct map, read-only, as Xen requires of page-table
     * pages; the kernel populates and maps every other frame when it first allocates it.
     */
    static Boot paravirtual(Vm vm) {
        Layout l = new Layout(vm);
        Hypercalls h = vm.vcpu(0).hypercalls();
        long[] mfn = new long[(int) (l.frames - l.areaStart)];
        for (int i = 0; i < mfn.length; i++) {
            mfn[i] = h.populatePhysmap(l.areaStart + i);
        }
        // table frames, top down: PML4, PDPTs, PDs, PTs (the same frames the native bootloader uses)
        long next = l.areaStart;
        long root = next++;
        long[] pdpts = new long[(int) l.pdpts];
        long[] pds = new long[(int) l.pds];
        long[] pts = new long[(int) l.pts];
        for (int i = 0; i < pdpts.length; i++) {
            pdpts[i] = next++;
        }
        for (int i = 0; i < pds.length; i++) {
            pds[i] = next++;
        }
        for (int i = 0; i < pts.length; i++) {
            pts[i] = next++;
        }
        long tableFlags = Pte.P | Pte.RW | Pte.US;
        int pml4Index = Pte.index(GuestKernel.DIRECT_MAP, Pte.LEVEL_PML4);
        for (int i = 0; i < pdpts.length; i++) {
            put(vm, root, pml4Index + i, Pte.entry(mfn(l, mfn, pdpts[i]) << 12, tableFlags));
        }
        for (int i = 0; i < pds.length; i++) {
            put(vm, pdpts[i / 512], i % 512, Pte.entry(mfn(l, mfn, pds[i]) << 12, tableFlags));
        }
        for (int i = 0; i < pts.length; i++) {
            put(vm, pds[i / 512], i % 512, Pte.entry(mfn(l, mfn, pts[i]) << 12, tableFlags));
        }
        for (long gfn = l.areaStart; gfn < l.frames; gfn++) { // page-table pages: mapped read-only
            put(vm, pts[(int) (gfn / 512)], (int) (gfn % 512), Pte.entry(mfn(l, mfn, gfn) << 12, DIRECT_MAP_LEAF & ~Pte.RW));
        }
        if (!h.pinTable(Pte.LEVEL_PML4, mfn(l, mfn, root))) {
            throw new IllegalStateException("the hypervisor refused the boot page tables: " + h.lastError());
        }
        return new Boot(root, l.free(), (int) (l.areaStart - 1), pts);
    }

    private static long mfn(Layout l, long[] mfn, long gfn) {
        return mfn[(int) (gfn - l.areaStart)];
    }

    private static void put(Vm vm, long tableGfn, int index, long entry) {
        vm.writePhysicalLong((tableGfn << MachineMemory.FRAME_SHIFT) + ((long) index << 3), entry);
    }

    /** Where the boot tables go: the top of guest memory, enough frames to map all of it with 4 KiB pages. */
    private static final class Layout {
        final long frames;
        final long pts;
        final long pds;
        final long pdpts;
        final long areaStart;

        Layout(Vm vm) {
            frames = vm.memorySize() >>> MachineMemory.FRAME_SHIFT;
            pts = (frames + 511) / 512;
            pds = (pts + 511) / 512;
            pdpts = (pds + 511) / 512;
            areaStart = frames - (pts + pds + pdpts + 1);
            if (areaStart < 16) {
                throw new IllegalArgumentException("guest memory of " + vm.memorySize() + " bytes is too small to boot");
            }
        }

        long[] free() {
            long[] free = new long[(int) (areaStart - 1)];
            int n = 0;
            for (long gfn = areaStart - 1; gfn >= 1; gfn--) { // low frames come out first
                free[n++] = gfn;
            }
            return free;
        }
    }
}
