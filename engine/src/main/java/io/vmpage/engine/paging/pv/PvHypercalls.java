package io.vmpage.engine.paging.pv;

import io.vmpage.engine.ExitReason;
import io.vmpage.engine.Hypercalls;
import io.vmpage.engine.Vcpu;
import io.vmpage.engine.memory.GuestPhysicalMap;
import io.vmpage.engine.paging.VcpuContext;

/** One vCPU's {@link Hypercalls}: each call is one exit into {@link ParavirtualPaging}. */
final class PvHypercalls implements Hypercalls {
    private final ParavirtualPaging pv;
    private final VcpuContext vcpu;
    private final GuestPhysicalMap p2m;
    /** Owner thread only. */
    private String lastError = "";

    PvHypercalls(ParavirtualPaging pv, VcpuContext vcpu, GuestPhysicalMap p2m) {
        this.pv = pv;
        this.vcpu = vcpu;
        this.p2m = p2m;
    }

    VcpuContext context() {
        return vcpu;
    }

    @Override
    public Vcpu vcpu() {
        return vcpu.vcpu();
    }

    @Override
    public long populatePhysmap(long gfn) {
        vcpu.countExit(ExitReason.HYPERCALL);
        return pv.populatePhysmap(this, gfn);
    }

    @Override
    public long machineFrame(long gfn) {
        return p2m.contains(gfn) ? p2m.machineFrame(gfn) : -1;
    }

    @Override
    public int mmuUpdate(long[] ptrs, long[] vals, int count) {
        if (count < 0 || count > ptrs.length || count > vals.length) {
            throw new IllegalArgumentException("mmu_update count " + count + " exceeds the request arrays ("
                + ptrs.length + " ptrs, " + vals.length + " vals)");
        }
        vcpu.countExit(ExitReason.HYPERCALL);
        return pv.mmuUpdate(this, ptrs, vals, count);
    }

    @Override
    public boolean pinTable(int level, long mfn) {
        vcpu.countExit(ExitReason.HYPERCALL);
        return pv.pinTable(this, level, mfn);
    }

    @Override
    public boolean unpinTable(long mfn) {
        vcpu.countExit(ExitReason.HYPERCALL);
        return pv.unpinTable(this, mfn);
    }

    @Override
    public boolean newBasePtr(long cr3) {
        vcpu.countExit(ExitReason.HYPERCALL);
        return pv.newBasePtr(this, cr3);
    }

    @Override
    public void invlpgLocal(long va) {
        vcpu.countExit(ExitReason.HYPERCALL);
        vcpu.mmu().invlpg(va);
    }

    @Override
    public void tlbFlushLocal() {
        vcpu.countExit(ExitReason.HYPERCALL);
        vcpu.mmu().flushAll();
    }

    @Override
    public void invlpgAll(long va) {
        vcpu.countExit(ExitReason.HYPERCALL);
        pv.invlpgAll(this, va);
    }

    @Override
    public String lastError() {
        return lastError;
    }

    void refuse(String reason) {
        lastError = reason;
    }
}
