package io.vmpage.engine.paging.nested;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.dirty.DirtyBitmap;
import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.dirty.DirtyTracking;
import io.vmpage.engine.dirty.TestLogs;
import io.vmpage.mmu.Ept;
import io.vmpage.mmu.MachineMemory;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** The one function every EPT leaf change goes through: what it derives from the old and the new value. */
class EptLeafTest {
    private static final long AT = 0x100;
    private static final long GFN = 7;
    private static final long RO = EptLeaf.of(0x42, EptLeaf.READ_ONLY_FLAGS) | Ept.A;
    private static final long RW = EptLeaf.of(0x42, EptLeaf.WRITABLE_FLAGS) | Ept.A;
    private final MachineMemory memory = MachineMemory.allocate(1 << 16);

    @AfterEach
    void close() {
        memory.close();
    }

    @Test
    void aWriteGrantIsLoggedAfterTheCasUnderWriteProtection() {
        DirtyLog.Writer log = TestLogs.writer(64, DirtyTracking.WRITE_PROTECT);
        memory.putLongVolatile(AT, RO);
        assertEquals(EptLeaf.DONE, EptLeaf.change(memory, AT, RO, RO | Ept.W, log, -1, GFN, false));
        assertEquals(RO | Ept.W, memory.getLongVolatile(AT));
        assertEquals(1, log.log().pending());
    }

    @Test
    void underDirtyBitsTheHardwaresDBitRecordsTheWriteInstead() {
        DirtyLog.Writer log = TestLogs.writer(64, DirtyTracking.DIRTY_BITS);
        memory.putLongVolatile(AT, 0);
        EptLeaf.change(memory, AT, 0, RW, log, -1, GFN, false); // a fill for a read maps writable under D bits
        assertEquals(0, log.log().pending(), "no write happened yet: nothing to report");
    }

    @Test
    void aLostRaceChangesNothingAndLogsNothing() {
        DirtyLog.Writer log = TestLogs.writer(64, DirtyTracking.WRITE_PROTECT);
        memory.putLongVolatile(AT, RO | Ept.D);
        assertEquals(EptLeaf.RACED, EptLeaf.change(memory, AT, RO, RO | Ept.W, log, -1, GFN, false));
        assertEquals(RO | Ept.D, memory.getLongVolatile(AT));
        assertEquals(0, log.log().pending());
    }

    @Test
    void droppingAPermissionOrTheFrameAsksForAFlushAndGainingOneDoesNot() {
        DirtyLog.Writer log = TestLogs.writer(64, null);
        memory.putLongVolatile(AT, RW);
        assertEquals(EptLeaf.FLUSH, EptLeaf.change(memory, AT, RW, RO, log, -1, GFN, false), "W revoked");
        assertEquals(EptLeaf.DONE, EptLeaf.change(memory, AT, RO, RW, log, -1, GFN, false), "W granted");
        long other = EptLeaf.of(0x43, EptLeaf.WRITABLE_FLAGS);
        assertEquals(EptLeaf.FLUSH, EptLeaf.change(memory, AT, RW, other, log, -1, GFN, false), "another frame");
        assertEquals(EptLeaf.FLUSH, EptLeaf.change(memory, AT, other, 0, log, -1, GFN, false), "unmapped");
    }

    @Test
    void aDroppedDBitIsLoggedUnderDirtyBitsUnlessTheCallerResetsOrCollectsIt() {
        DirtyLog.Writer log = TestLogs.writer(64, DirtyTracking.DIRTY_BITS);
        memory.putLongVolatile(AT, RW | Ept.D);
        long shared = EptLeaf.of(0x42, EptLeaf.SHARED_FLAGS);
        assertEquals(EptLeaf.FLUSH, EptLeaf.change(memory, AT, RW | Ept.D, shared, log, -1, GFN, false));
        assertEquals(1, log.log().pending(), "a merge dropping D logs the write D recorded");

        DirtyLog.Writer reset = TestLogs.writer(64, DirtyTracking.DIRTY_BITS);
        memory.putLongVolatile(AT, RW | Ept.D);
        assertTrue(EptLeaf.clearBits(memory, AT, Ept.D, reset, GFN, true));
        assertEquals(RW, memory.getLongVolatile(AT));
        assertEquals(0, reset.log().pending(), "the reset as logging starts forgets what D recorded before");

        DirtyBitmap into = new DirtyBitmap(64);
        memory.putLongVolatile(AT, RW | Ept.D);
        EptLeaf.collectDirty(memory, AT, reset, GFN, into);
        assertTrue(into.isDirty(GFN));
        assertEquals(RW, memory.getLongVolatile(AT));
        EptLeaf.collectDirty(memory, AT, reset, GFN + 1, into);
        assertFalse(into.isDirty(GFN + 1), "a clean leaf is not collected");
    }
}
