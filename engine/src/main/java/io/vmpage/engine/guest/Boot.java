package io.vmpage.engine.guest;

import io.vmpage.engine.Vm;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.PageTables;
import io.vmpage.mmu.Pte;

/**
 * What the bootloader leaves the kernel: page tables mapping all guest RAM at
 * {@link GuestKernel#DIRECT_MAP} with 4 KiB pages (global, no-execute, as Linux maps its physmap), in
 * frames at the top of guest memory, and the list of frames still free. Guest frame 0 stays unused, as
 * the low page does on PCs.
 */
record Boot(long rootGfn, long[] freeFrames, int freeCount, long tableAreaStartGfn) {
    static Boot directMap(Vm vm) {
        long frames = vm.memorySize() >>> MachineMemory.FRAME_SHIFT;
        long pts = (frames + 511) / 512;
        long pds = (pts + 511) / 512;
        long pdpts = (pds + 511) / 512;
        long tableFrames = pts + pds + pdpts + 1;
        long areaStart = frames - tableFrames;
        if (areaStart < 16) {
            throw new IllegalArgumentException("guest memory of " + vm.memorySize() + " bytes is too small to boot");
        }
        PageTables tables = vm.guestPageTables(areaStart << MachineMemory.FRAME_SHIFT, frames << MachineMemory.FRAME_SHIFT);
        for (long gfn = 0; gfn < frames; gfn++) {
            tables.map(GuestKernel.DIRECT_MAP + (gfn << MachineMemory.FRAME_SHIFT), gfn << MachineMemory.FRAME_SHIFT,
                Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.G | Pte.NX | Pte.A | Pte.D);
        }
        long[] free = new long[(int) (areaStart - 1)];
        int n = 0;
        for (long gfn = areaStart - 1; gfn >= 1; gfn--) { // low frames come out first
            free[n++] = gfn;
        }
        return new Boot(tables.root() >>> MachineMemory.FRAME_SHIFT, free, n, areaStart);
    }
}
