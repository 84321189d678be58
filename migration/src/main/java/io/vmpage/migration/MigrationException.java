package io.vmpage.migration;

/** A migration that could not complete: a lost or stalled connection, or a stream the destination rejects. */
public class MigrationException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public MigrationException(String message) {
        super(message);
    }

    public MigrationException(String message, Throwable cause) {
        super(message, cause);
    }
}
