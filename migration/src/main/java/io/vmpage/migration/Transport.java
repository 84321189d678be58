package io.vmpage.migration;

import java.nio.ByteBuffer;

/**
 * One migration connection, as chunks of stream bytes moving from the source to the destination:
 * buffers come from a bounded pool and go back to it, so a running migration allocates nothing per
 * page. The source {@link #acquire}s a buffer, fills it, {@link #send}s it; the destination
 * {@link #receive}s it, parses it, {@link #release}s it. Either side may find the connection lost or
 * stalled: a {@link MigrationException} then.
 */
public interface Transport extends AutoCloseable {
    /** An empty buffer (position 0, limit = capacity) to fill; waits while every buffer is in flight. */
    ByteBuffer acquire();

    /** Hands {@code filled} (flipped: position 0, limit = its bytes) to the destination. */
    void send(ByteBuffer filled);

    /** Source: no more bytes follow. */
    void finish();

    /** The next buffer of the stream (flipped), or null once the source finished and all were received. */
    ByteBuffer receive();

    /** Gives a received buffer back to the pool. */
    void release(ByteBuffer buffer);

    /** Destination: asks the source to send guest frame {@code gfn} first (post-copy's return path). */
    void request(long gfn);

    /** Source: the next guest frame the destination asked for, -1 when none is waiting. */
    long pollRequest();

    /** Breaks the connection (the other side's next call fails with {@code why}); tests inject failures with it. */
    void fail(String why);

    /** Releases the connection's resources. */
    @Override
    void close();
}
