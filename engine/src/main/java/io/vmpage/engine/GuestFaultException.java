package io.vmpage.engine;

import io.vmpage.mmu.Fault;

/**
 * A fault the guest did not handle: the architectural fault a guest program sees (a #PF its kernel's
 * handler declined, a #GP for a non-canonical address). Never a host error.
 */
public final class GuestFaultException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final int fault;
    private final int errorCode;
    private final long address;

    public GuestFaultException(int fault, int errorCode, long address) {
        super(Fault.name(fault) + (fault == Fault.PAGE_FAULT ? " error code 0x" + Integer.toHexString(errorCode) : "")
            + " at 0x" + Long.toHexString(address), null, false, false);
        this.fault = fault;
        this.errorCode = errorCode;
        this.address = address;
    }

    /** {@link Fault} code. */
    public int fault() {
        return fault;
    }

    /** #PF error code. */
    public int errorCode() {
        return errorCode;
    }

    /** CR2 for a #PF, the linear address for #GP. */
    public long address() {
        return address;
    }
}
