package io.vmpage.engine.policy;

/** Admission control refused a VM: the host cannot reserve what it needs; the message says what is short. */
public final class AdmissionException extends IllegalStateException {
    private static final long serialVersionUID = 1L;

    public AdmissionException(String message) {
        super(message);
    }
}
