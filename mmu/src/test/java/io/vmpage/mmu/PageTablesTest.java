package io.vmpage.mmu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

class PageTablesTest {
    @Test
    void leafSlotBuildsThePathAndLeavesTheSlotForTheCallerToFill() {
        try (MachineMemory memory = MachineMemory.allocate(1 << 20)) {
            PageTables t = new PageTables(memory, PageTables.Format.EPT, 4, PageTables.bumpAllocator(memory, 0, 1 << 20));
            long va = 0x1234_5000L;
            assertEquals(-1, t.entryAddress(va, Pte.LEVEL_PT), "no path yet");
            long slot = t.leafSlot(va);
            assertEquals(slot, t.entryAddress(va, Pte.LEVEL_PT), "the tables above the slot exist now");
            assertEquals(0, t.read(slot), "the slot itself is left empty");
            assertEquals(-1, t.leafAddress(va), "so nothing maps the address yet");
            assertEquals(slot, t.leafSlot(va), "the same slot again, no new tables");
            t.map(0x4000_0000L, 0x4000_0000L, Pte.SHIFT_2M, Ept.RWX);
            assertThrows(IllegalArgumentException.class, () -> t.leafSlot(0x4000_1000L), "inside a 2 MiB page");
        }
    }
}
