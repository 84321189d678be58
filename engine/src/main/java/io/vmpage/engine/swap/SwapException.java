package io.vmpage.engine.swap;

/**
 * A host swap operation failed (an I/O error on the swap file, a full or closed device). The operation that
 * got it left the VM consistent: a failed swap-out leaves the page in memory, a failed swap-in leaves it on
 * swap and fails the access that touched it.
 */
public final class SwapException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public SwapException(String message) {
        super(message);
    }

    public SwapException(String message, Throwable cause) {
        super(message, cause);
    }
}
