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

/** {@link HostCopySwap}'s copy racing a swap-out with NESTED paging, the copy one by one (copyFrameFrom). */
@JCStressTest
@Outcome(id = "1, 7, 7", expect = ACCEPTABLE, desc = "swapped out; the copy read the page before, or brought it back in")
@Outcome(id = "0, 7, 7", expect = ACCEPTABLE, desc = "not swapped out (changed meanwhile)")
@Outcome(expect = FORBIDDEN, desc = "the copy read a page away on swap as zeros, or a frame already given back")
@State
public class HostCopySwapNestedSingleStress {
    private final HostCopySwap.Pair p = HostCopySwap.pair(PagingMode.NESTED);

    @Actor
    public void swapOut(III_Result r) {
        HostCopySwap.swapOut(p, r);
    }

    @Actor
    public void copy(III_Result r) {
        HostCopySwap.copy(p, false, r);
    }

    @Arbiter
    public void after(III_Result r) {
        HostCopySwap.after(p, r);
    }
}
