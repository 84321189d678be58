package io.vmpage.engine;

import io.vmpage.mmu.Translation;

/** PARAVIRTUAL paging backend: not available yet (creating a VM in this mode fails with a clear error). */
final class ParavirtualPaging implements PagingBackend {
    ParavirtualPaging(Vm vm) {
        throw new UnsupportedOperationException("paging mode PARAVIRTUAL is not available yet");
    }

    @Override
    public void attach(Vcpu vcpu) {
    }

    @Override
    public void loadCr3(Vcpu vcpu, long cr3) {
    }

    @Override
    public void invlpg(Vcpu vcpu, long va) {
    }

    @Override
    public int handleFault(Vcpu vcpu, Translation fault) {
        return INJECT;
    }

    @Override
    public void release() {
    }
}
