package io.vmpage.engine.guest;

/** The guest kernel ran out of guest frames for a page table or a mapping. */
public final class GuestOutOfMemoryException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public GuestOutOfMemoryException(String message) {
        super(message);
    }
}
