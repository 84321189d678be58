package io.vmpage.engine.policy;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** ESX's four free-memory states and their hysteresis. */
class FreeMemoryStateTest {
    @Test
    void statesDropAtTheLowerThresholdAndRiseOnlyAboveTheHigherOne() {
        FreeMemoryState s = FreeMemoryState.HIGH;
        assertEquals(FreeMemoryState.HIGH, s = s.next(0.05), "5% free: still high (soft starts below 4%)");
        assertEquals(FreeMemoryState.SOFT, s = s.next(0.039));
        assertEquals(FreeMemoryState.SOFT, s = s.next(0.05), "back at 5%: soft until above 6%");
        assertEquals(FreeMemoryState.HIGH, s = s.next(0.061));
        assertEquals(FreeMemoryState.LOW, s = s.next(0.005), "a sudden drop goes straight to low");
        assertEquals(FreeMemoryState.LOW, s = s.next(0.015), "low until above 2%");
        assertEquals(FreeMemoryState.HARD, s = s.next(0.5), "one state up per update");
        assertEquals(FreeMemoryState.SOFT, s = s.next(0.5));
        assertEquals(FreeMemoryState.HIGH, s.next(0.5));
        assertThrows(IllegalArgumentException.class, () -> FreeMemoryState.HIGH.next(1.5));
        assertThrows(IllegalArgumentException.class, () -> FreeMemoryState.HIGH.next(Double.NaN));
    }

    @Test
    void eachStateReclaimsByItsMechanism() {
        assertTrue(!FreeMemoryState.HIGH.balloons() && !FreeMemoryState.HIGH.swaps());
        assertTrue(FreeMemoryState.SOFT.balloons() && !FreeMemoryState.SOFT.swaps());
        assertTrue(FreeMemoryState.HARD.swaps() && !FreeMemoryState.HARD.blocksVmsAboveTarget());
        assertTrue(FreeMemoryState.LOW.swaps() && FreeMemoryState.LOW.blocksVmsAboveTarget());
    }
}
