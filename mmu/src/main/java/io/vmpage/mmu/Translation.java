package io.vmpage.mmu;

/**
 * The outcome of one translation, reused by its owner (one per {@link Mmu}) so translating allocates
 * nothing. On success {@link #fault} is {@link Fault#NONE} and {@code hpa} is the host-physical
 * address; otherwise the fault fields say what the hardware would report.
 */
public final class Translation {
    /** The linear (guest-virtual) address translated. */
    public long va;
    /** Guest-physical address (equal to {@code hpa} without EPT); -1 when a TLB hit produced the result. */
    public long gpa;
    /** Host-physical address. */
    public long hpa;
    /** log2 of the size of the page the translation maps (12, 21 or 30). */
    public int pageShift;
    /** The access translated ({@link Access} bits). */
    public int access;
    /** {@link Fault} code. */
    public int fault;
    /** #PF error code. */
    public int errorCode;
    /** #PF: CR2 (the faulting linear address). EPT faults: the guest-physical address. #MC: the bad physical address. */
    public long faultAddress;
    /** EPT violation exit qualification. */
    public long qualification;
    /** Paging-structure memory references this translation made (0 on a TLB hit). */
    public int refs;
    /** True when the TLB supplied the translation. */
    public boolean tlbHit;

    void reset(long va, int access) {
        this.va = va;
        this.access = access;
        this.gpa = -1;
        this.hpa = -1;
        this.pageShift = 0;
        this.fault = Fault.NONE;
        this.errorCode = 0;
        this.faultAddress = 0;
        this.qualification = 0;
        this.refs = 0;
        this.tlbHit = false;
    }

    /** The outcome of a warm walk: one reference, a 4 KiB page, no fault. */
    void warm(long va, int access, long gpa, long hpa) {
        reset(va, access);
        this.gpa = gpa;
        this.hpa = hpa;
        this.pageShift = Pte.SHIFT_4K;
        this.refs = 1;
    }

    public boolean ok() {
        return fault == Fault.NONE;
    }

    /** Size in bytes of the page mapped. */
    public long pageSize() {
        return 1L << pageShift;
    }

    /** Copies another translation's fields into this one. */
    public void copyFrom(Translation o) {
        va = o.va;
        gpa = o.gpa;
        hpa = o.hpa;
        pageShift = o.pageShift;
        access = o.access;
        fault = o.fault;
        errorCode = o.errorCode;
        faultAddress = o.faultAddress;
        qualification = o.qualification;
        refs = o.refs;
        tlbHit = o.tlbHit;
    }

    @Override
    public String toString() {
        StringBuilder b = new StringBuilder();
        b.append(Access.describe(access)).append(' ').append(MachineMemory.hex(va));
        if (fault == Fault.NONE) {
            b.append(" -> gpa ").append(gpa < 0 ? "?" : MachineMemory.hex(gpa)).append(" hpa ").append(MachineMemory.hex(hpa))
                .append(" (").append(pageSize() >> 10).append(" KiB page)");
        } else {
            b.append(" -> ").append(Fault.name(fault));
            if (fault == Fault.PAGE_FAULT) {
                b.append(" error code ").append(MachineMemory.hex(errorCode));
            } else if (fault == Fault.EPT_VIOLATION) {
                b.append(" qualification ").append(MachineMemory.hex(qualification));
            }
            b.append(" at ").append(MachineMemory.hex(faultAddress));
        }
        return b.append(", ").append(refs).append(" refs").append(tlbHit ? " (TLB hit)" : "").toString();
    }
}
