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

/** {@link PauseRetire}'s switch-over with SHADOW paging, the writer driving its vCPU by one-off accesses. */
@JCStressTest
@Outcome(id = "0, 0, 0", expect = ACCEPTABLE, desc = "paused before the first store")
@Outcome(id = "1, 1, 1", expect = ACCEPTABLE, desc = "paused after one store")
@Outcome(id = "2, 2, 2", expect = ACCEPTABLE, desc = "paused after two stores")
@Outcome(id = "3, 3, 3", expect = ACCEPTABLE, desc = "every store before the pause")
@Outcome(expect = FORBIDDEN, desc = "LOST WRITE or broken pause: the word changed after the copy, or the copy disagrees with the stores done")
@State
public class PauseRetireShadowOneOffStress {
    private final PauseRetire.Guest g = PauseRetire.guest(PagingMode.SHADOW);

    @Actor
    public void guest(III_Result r) {
        TrialGuests.storeOneTwoThree(g, false, r);
    }

    @Actor
    public void switchOver(III_Result r) {
        PauseRetire.switchOver(g, r);
    }

    @Arbiter
    public void after(III_Result r) {
        PauseRetire.after(g, r);
    }
}
