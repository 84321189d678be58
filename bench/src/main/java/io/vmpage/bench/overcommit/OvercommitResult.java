package io.vmpage.bench.overcommit;

import java.util.List;

/**
 * What an overcommit scenario measured: each VM's final memory and its allocation over time, the host's
 * free memory and ESX state over time, what the reclaimer and the sharing scanner did, and whether every
 * page the guests kept still held what they wrote.
 *
 * @param sharingSteps for the sharing scenario, the host after each VM joined; empty otherwise
 * @param mismatchedPages kept guest pages whose contents differ from what the guest wrote (must be 0)
 * @param agentErrors errors of the host's reclaimer and scanner agents (must be 0)
 */
public record OvercommitResult(OvercommitScenario scenario, io.vmpage.engine.PagingMode paging, double tau, long hostBytes, long durationNanos, List<VmResult> vms,
                               List<HostPoint> host, ReclaimerTotals reclaimer, List<SharingStep> sharingSteps,
                               long verifiedPages, long mismatchedPages, long agentErrors) {

    /** One VM: its policy parameters, final values, and allocation over time. */
    public record VmResult(String name, long shares, long minBytes, long memoryBytes, boolean active, long allocatedBytes,
                           long sharedBytes, long balloonedBytes, long swappedBytes, long stalls, long writes,
                           double activeEstimate, List<Point> timeline) {
    }

    /** One sample of a VM's allocation: the machine memory backing it privately. */
    public record Point(long tMs, long allocatedBytes) {
    }

    /** One sample of the host: free machine memory and the reclaimer's state then. */
    public record HostPoint(long tMs, long freeBytes, String state) {
    }

    /** What the reclaimer did over the run. */
    public record ReclaimerTotals(long periods, long balloonPagesAsked, long balloonFramesFreed, long swappedPages,
                                 String finalState) {
    }

    /**
     * The host once {@code vms} VMs booted from one image ran under the scanner: the share of their pages
     * mapped to shared frames, and the machine memory that saved.
     */
    public record SharingStep(int vms, long guestPages, long sharedPages, long savedBytes) {
        public double sharedFraction() {
            return guestPages == 0 ? 0 : (double) sharedPages / guestPages;
        }

        public double savedFraction() {
            return guestPages == 0 ? 0 : (double) savedBytes / (guestPages << 12);
        }
    }

    /** Whether the run is consistent: every kept page intact and no agent failed. */
    public boolean verified() {
        return mismatchedPages == 0 && agentErrors == 0;
    }

}
