package io.vmpage.engine.paging.shadow;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.dirty.DirtyTracking;
import io.vmpage.engine.dirty.TestLogs;
import io.vmpage.mmu.MachineMemory;
import io.vmpage.mmu.Pte;
import org.junit.jupiter.api.Test;

/** The one function every shadow leaf change goes through. */
class ShadowLeafTest {
    private static final long AT = 0x300;
    private static final long RO = (0x42L << 12) | Pte.P | Pte.US | Pte.A;

    @Test
    void aWritableFillIsLoggedAndWriteProtectionOnlyTouchesLeavesOfThatFrame() {
        try (MachineMemory memory = MachineMemory.allocate(1 << 16)) {
            DirtyLog.Writer log = TestLogs.writer(64, DirtyTracking.DIRTY_RING);
            memory.putLongVolatile(AT, RO);
            assertEquals(ShadowLeaf.DONE, ShadowLeaf.change(memory, AT, RO, RO | Pte.RW | Pte.D, log, 0, 5));
            assertEquals(1, log.log().ringEntries(0), "logged in the vCPU's ring");
            assertFalse(ShadowLeaf.writeProtect(memory, AT, 0x43, log), "a stale reverse-map record of another frame");
            assertTrue(ShadowLeaf.writable(memory.getLongVolatile(AT)));
            assertTrue(ShadowLeaf.writeProtect(memory, AT, 0x42, log));
            assertEquals(RO, memory.getLongVolatile(AT), "RW and D go together");
        }
    }

    @Test
    void zappingAPresentLeafAsksForAFlush() {
        try (MachineMemory memory = MachineMemory.allocate(1 << 16)) {
            DirtyLog.Writer log = TestLogs.writer(64, null);
            memory.putLongVolatile(AT, RO);
            assertEquals(ShadowLeaf.FLUSH, ShadowLeaf.change(memory, AT, RO, 0, log, -1, -1));
            assertEquals(ShadowLeaf.RACED, ShadowLeaf.change(memory, AT, RO, 0, log, -1, -1));
        }
    }
}
