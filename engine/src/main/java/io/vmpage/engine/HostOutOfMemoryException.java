package io.vmpage.engine;

/** The host has no machine frame left for a demand: the VM's state is unchanged and the access can be retried later. */
public final class HostOutOfMemoryException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public HostOutOfMemoryException(String message) {
        super(message);
    }
}
