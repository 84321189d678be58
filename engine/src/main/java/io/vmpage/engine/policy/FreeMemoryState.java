package io.vmpage.engine.policy;

/**
 * ESX's free-memory states (Waldspurger, OSDI 2002, section 6.2), each with its threshold as a share of
 * machine memory and what reclaims memory in it: in HIGH nothing; in SOFT ballooning (paging only where a
 * balloon cannot help); in HARD paging; in LOW paging, and every VM above its target allocation is
 * blocked. {@link #next} moves between them with the paper's hysteresis.
 */
public enum FreeMemoryState {
    HIGH(0.06),
    SOFT(0.04),
    HARD(0.02),
    LOW(0.01);

    /** The state's threshold: this share of machine memory free. */
    public final double threshold;

    FreeMemoryState(double threshold) {
        this.threshold = threshold;
    }

    /**
     * The state after this one with {@code freeFraction} of machine memory free: a lower state as soon as
     * free memory drops below the lower state's threshold (from HIGH: below 4%, SOFT; below 2%, HARD;
     * below 1%, LOW), and back to the next higher state only once free memory is above that higher
     * state's threshold (from SOFT: above 6%), so a host hovering at a threshold does not flap.
     *
     * @throws IllegalArgumentException when {@code freeFraction} is outside [0, 1]
     */
    public FreeMemoryState next(double freeFraction) {
        if (!(freeFraction >= 0 && freeFraction <= 1)) {
            throw new IllegalArgumentException("free memory fraction " + freeFraction + " must be between 0 and 1");
        }
        FreeMemoryState s = this;
        while (s != LOW && freeFraction < values()[s.ordinal() + 1].threshold) {
            s = values()[s.ordinal() + 1];
        }
        while (s != HIGH && s == this && freeFraction > values()[s.ordinal() - 1].threshold) {
            s = values()[s.ordinal() - 1]; // one step up per update, as ESX steps back up
        }
        return s;
    }

    /** Whether memory is reclaimed by ballooning in this state. */
    public boolean balloons() {
        return this == SOFT;
    }

    /** Whether memory is reclaimed by host swapping in this state. */
    public boolean swaps() {
        return this == HARD || this == LOW;
    }

    /** Whether VMs above their target allocation are blocked in this state. */
    public boolean blocksVmsAboveTarget() {
        return this == LOW;
    }
}
