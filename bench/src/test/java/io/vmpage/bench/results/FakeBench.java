package io.vmpage.bench.results;

import io.vmpage.bench.jmh.Baseline;

/** Stand-in benchmark class for the results tests: only the {@link Baseline} annotations matter. */
public class FakeBench {
    public long raw() {
        return 0;
    }

    @Baseline("raw")
    public long fast() {
        return 0;
    }

    @Baseline("raw")
    public long slow() {
        return 0;
    }

    public long plain() {
        return 0;
    }
}
