package io.vmpage.migration;

/** Which rule ended pre-copy and started the stop-and-copy. */
public enum StopReason {
    /** QEMU: the pages left would take less than the downtime limit at the measured bandwidth. */
    DOWNTIME_LIMIT,
    /** Xen: the round cap was reached. */
    MAX_ROUNDS,
    /** Xen: fewer than 50 pages were dirtied in the last round. */
    FEW_DIRTY_PAGES,
    /** Xen: more than three times the VM's memory has been sent. */
    SENT_THREE_TIMES_MEMORY,
    /** Stop-and-copy alone: no pre-copy round. */
    STOP_AND_COPY,
    /** Post-copy: the VM moved at once, its pages followed. */
    POST_COPY
}
