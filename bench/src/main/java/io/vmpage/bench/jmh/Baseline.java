package io.vmpage.bench.jmh;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * Names the benchmark method of the same class that is this benchmark's in-run baseline: the results
 * table divides this benchmark's score by the baseline's score for the same parameters from the same
 * result file. Baselines are raw operations (plain {@code Unsafe} on a raw region) doing the same work
 * without vmpage's abstractions, so the ratio is the cost of the abstraction.
 */
@Documented
@Retention(RetentionPolicy.RUNTIME)
@Target(ElementType.METHOD)
public @interface Baseline {
    /** Name of the baseline benchmark method in the same class. */
    String value();
}
