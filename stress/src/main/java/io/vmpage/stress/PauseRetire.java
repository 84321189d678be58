package io.vmpage.stress;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vm;
import org.openjdk.jcstress.infra.results.III_Result;

/**
 * The switch-over a migration source makes, on the engine's own {@code Vm} and {@code Vcpu}: a guest
 * writer stores 1, 2, 3 to one word while another thread pauses the VM, copies the word (what the
 * destination receives), and retires the vCPUs (the guest runs on elsewhere now). Results: (stores the
 * writer completed before it faulted, the copy, the word after both). Only (k, k, k) is allowed: a store
 * that lands after the pause returned is lost on the destination; a completed store missing from the
 * copy, or a faulted one present in it, breaks the pause's promise that the vCPU is outside guest mode.
 *
 * <p>Each trial has its own VM (a vCPU cannot be un-retired), created on a shared host and destroyed by
 * the arbiter; jcstress keeps at most 10,240 trials live (see {@link Slots}), at most 32 frames each. The
 * host hands destroyed VMs' ids and VPIDs out again, so the 16-bit id spaces last.
 */
final class PauseRetire {
    static final Host HOST = Host.create(768L << 20);

    private PauseRetire() {
    }

    /** A trial's VM and the guest-physical address of the word its writer stores to. */
    record Guest(Vm vm, long gpa) {
    }

    /** A trial's VM on {@link #HOST} ({@link TrialGuests#create}). */
    static Guest guest(PagingMode mode) {
        return TrialGuests.create(HOST, mode);
    }

    /** The migration thread: pause, copy, retire (as {@code Migration} does at the switch-over). */
    static void switchOver(Guest g, III_Result r) {
        g.vm().pause();
        r.r2 = (int) g.vm().readPhysicalLong(g.gpa());
        g.vm().retireVcpus();
    }

    /** The word once both are done; the VM goes. */
    static void after(Guest g, III_Result r) {
        r.r3 = (int) g.vm().readPhysicalLong(g.gpa());
        HOST.destroyVm(g.vm());
    }
}
