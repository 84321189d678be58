package io.vmpage.archcheck;

import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.dirty.WriteProtection;
import io.vmpage.mmu.MachineMemory;

/**
 * Reaches the engine's internal interface the way {@code InternalApiTest} forbids bench and migration
 * to, so that test can show its rule fails on such a class. Outside {@code io.vmpage.bench} on purpose;
 * never run.
 */
public final class UsesInternals {
    private UsesInternals() {
    }

    static boolean grant(MachineMemory memory, DirtyLog.Writer log) {
        return WriteProtection.grant(memory, 0, 0, 2, log, -1, 0);
    }
}
