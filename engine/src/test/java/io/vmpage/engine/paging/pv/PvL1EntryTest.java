package io.vmpage.engine.paging.pv;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.Hypercalls;
import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.dirty.DirtyTracking;
import io.vmpage.engine.dirty.TestLogs;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Pte;
import org.junit.jupiter.api.Test;

/** The one function through which the hypervisor changes a paravirtual guest's L1 entry. */
class PvL1EntryTest {
    private static final long AT = 0x200;
    private static final long WRITABLE = (0x42L << 12) | Pte.P | Pte.RW | Pte.US | Pte.A;

    @Test
    void protectingHoldsRwBackAsTheGuestStillSeesItAndTheFirstWriteIsLogged() {
        try (MachineMemory memory = MachineMemory.allocate(1 << 16)) {
            DirtyLog.Writer log = TestLogs.writer(64, DirtyTracking.WRITE_PROTECT);
            memory.putLongVolatile(AT, WRITABLE | Pte.D);
            assertTrue(PvL1Entry.writeProtect(memory, AT, log));
            long held = memory.getLongVolatile(AT);
            assertFalse(PvL1Entry.writable(held));
            assertEquals(WRITABLE | Pte.D, Hypercalls.guestView(held), "the guest's view and its D bit are kept");
            assertFalse(PvL1Entry.writeProtect(memory, AT, log), "nothing left to protect");
            assertEquals(PvL1Entry.DONE, PvL1Entry.change(memory, AT, held, PvL1Entry.granted(held), log, -1, 9));
            assertEquals(WRITABLE | Pte.D, memory.getLongVolatile(AT));
            assertEquals(1, log.log().pending());
        }
    }

    @Test
    void replacingAPresentEntryAsksForAFlush() {
        try (MachineMemory memory = MachineMemory.allocate(1 << 16)) {
            DirtyLog.Writer log = TestLogs.writer(64, null);
            memory.putLongVolatile(AT, WRITABLE);
            assertEquals(PvL1Entry.FLUSH, PvL1Entry.change(memory, AT, WRITABLE, WRITABLE & ~Pte.RW, log, -1, 9));
            assertEquals(PvL1Entry.FLUSH, PvL1Entry.change(memory, AT, WRITABLE & ~Pte.RW, 0, log, -1, -1));
            assertEquals(PvL1Entry.DONE, PvL1Entry.change(memory, AT, 0, WRITABLE, log, -1, 9));
            assertEquals(PvL1Entry.RACED, PvL1Entry.change(memory, AT, 0, WRITABLE, log, -1, 9));
        }
    }
}
