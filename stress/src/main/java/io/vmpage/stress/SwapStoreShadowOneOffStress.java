package io.vmpage.stress;

import static org.openjdk.jcstress.annotations.Expect.ACCEPTABLE;
import static org.openjdk.jcstress.annotations.Expect.FORBIDDEN;

import io.vmpage.engine.PagingMode;
import org.openjdk.jcstress.annotations.Actor;
import org.openjdk.jcstress.annotations.Arbiter;
import org.openjdk.jcstress.annotations.JCStressTest;
import org.openjdk.jcstress.annotations.Outcome;
import org.openjdk.jcstress.annotations.State;
import org.openjdk.jcstress.infra.results.III_Result;

/** {@link SwapStore}'s swap-out racing stores with SHADOW paging, the writer driving its vCPU by one-off accesses. */
@JCStressTest
@Outcome(id = "3, 1, 3", expect = ACCEPTABLE, desc = "swapped out; the last store came back from swap or landed after")
@Outcome(id = "3, 0, 3", expect = ACCEPTABLE, desc = "not swapped out (the page was away already, or changed meanwhile)")
@Outcome(expect = FORBIDDEN, desc = "LOST WRITE: a completed store is not what comes back")
@State
public class SwapStoreShadowOneOffStress {
    private final PauseRetire.Guest g = SwapStore.guest(PagingMode.SHADOW);

    @Actor
    public void guest(III_Result r) {
        TrialGuests.storeOneTwoThree(g, false, r);
    }

    @Actor
    public void swapOut(III_Result r) {
        SwapStore.swapOut(g, r);
    }

    @Arbiter
    public void after(III_Result r) {
        SwapStore.after(g, r);
    }
}
