package io.vmpage.engine.memory;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.reflect.Method;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** The packed encodings: their fields never overlap (checked when each class loads) and they round-trip. */
class EncodingTest {
    @Test
    void everyEncodingClassPassesItsOverlapCheckWhenItLoads() throws Exception {
        for (String name : new String[] {"io.vmpage.engine.memory.FrameDescriptor", "io.vmpage.engine.memory.P2mEntry",
            "io.vmpage.engine.paging.nested.EptLeaf", "io.vmpage.engine.paging.pv.PvL1Entry"}) {
            Class.forName(name, true, getClass().getClassLoader()); // an overlap throws from the class initializer
        }
    }

    @Test
    void theOverlapCheckNamesTheFieldsThatShareABit() {
        IllegalStateException e = assertThrows(IllegalStateException.class,
            () -> BitFields.requireDisjoint("test entry", "low", 0b0110L, "high", 0b1100L));
        assertTrue(e.getMessage().contains("low and high") && e.getMessage().contains("0x4"), e.getMessage());
        assertThrows(IllegalStateException.class, () -> BitFields.requireDisjoint("test entry", "empty", 0L));
    }

    @Test
    void guestPhysicalMapEntriesRoundTripInEveryState() {
        long mfn = P2mEntry.MAX_PAYLOAD;
        long p = P2mEntry.privateFrame(mfn);
        assertTrue(P2mEntry.isPresent(p));
        assertEquals(P2mEntry.PRIVATE, P2mEntry.kind(p));
        assertEquals(mfn, P2mEntry.frame(p));
        long s = P2mEntry.sharedFrame(3);
        assertEquals(P2mEntry.SHARED, P2mEntry.kind(s));
        assertEquals(3, P2mEntry.frame(s));
        for (int kind : new int[] {P2mEntry.BALLOONED, P2mEntry.SWAPPED, P2mEntry.REMOTE}) {
            long e = P2mEntry.notPresent(kind, 12345);
            assertFalse(P2mEntry.isPresent(e));
            assertEquals(kind, P2mEntry.kind(e));
            assertEquals(-1, P2mEntry.frame(e), "no frame behind a non-present entry");
            assertEquals(12345, P2mEntry.payloadOf(e));
        }
        assertEquals(-1, P2mEntry.frame(P2mEntry.EMPTY));
        assertEquals("swapped to slot 9", P2mEntry.describe(P2mEntry.notPresent(P2mEntry.SWAPPED, 9)));
        assertThrows(IllegalArgumentException.class, () -> P2mEntry.notPresent(P2mEntry.PRIVATE, 0));
        assertThrows(IllegalArgumentException.class, () -> P2mEntry.privateFrame(mfn + 1));
    }

    @Test
    void theGuestPhysicalMapAnEmbedderSeesCannotBeChanged() {
        Set<String> mutators = Set.of("install", "compareAndSet", "remove", "replace");
        for (Method m : GuestPhysicalMap.class.getMethods()) {
            assertFalse(mutators.contains(m.getName()), m + " is public");
        }
        assertEquals(0, GuestPhysicalMap.class.getConstructors().length);
        PhysicalMapWriter writer = new PhysicalMapWriter(4);
        assertTrue(writer.install(1, 9));
        assertFalse(writer.install(1, 10), "installed once");
        assertEquals(9, writer.map().machineFrame(1));
        assertTrue(writer.remove(1, 9));
        assertEquals(P2mEntry.EMPTY, writer.map().entry(1));
    }
}
