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

    /**
     * Destination: one message of {@code words} back to the source over the return path (a migration
     * between processes replies with its page hashes; a post-copy recovery opens with the frames it holds).
     *
     * @throws UnsupportedOperationException when this transport has no such message
     */
    default void reply(long[] words) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " carries no reply");
    }

    /** Source: the destination's {@link #reply}, waited for at most {@code millis}. */
    default long[] awaitReply(long millis) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " carries no reply");
    }

    /**
     * Multifd channel {@code index} (1, 2, ...) of this connection: another connection to the same peer
     * for pages alone (QEMU's multifd channels), opened by the source and taken by the destination. The
     * destination end takes the channels in the order they arrive (each names itself in its first
     * record); an in-process transport gives both ends the same object for the same index. Failing or
     * closing this connection fails or closes its channels too.
     *
     * @throws MigrationException when the channel cannot be opened
     * @throws UnsupportedOperationException when this transport has no channels
     */
    default Transport channel(int index) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no multifd channels");
    }

    /**
     * Source: offers {@code vm}'s memory to the destination, so that PAGE records may name a page instead
     * of carrying it and the destination copies it straight out of the source VM ({@link
     * io.vmpage.engine.Vm#copyFrameFrom}, under the source's host-access guard). True when this transport
     * can: only one whose ends share a process. Its multifd channels offer the same.
     */
    default boolean offerMemory(io.vmpage.engine.Vm vm) {
        return false;
    }

    /** Either end: the VM whose memory the source offered, null when none (every page is in the stream then). */
    default io.vmpage.engine.Vm offeredMemory() {
        return null;
    }

    /**
     * Destination: offers its page copy by reference to the source's thread, which copies pieces of it while
     * it waits for the destination ({@link SharedCopy}); null withdraws it. True when this transport can:
     * only the main connection of one whose ends share a process.
     */
    default boolean shareCopy(SharedCopy copy) {
        return false;
    }

    /** Source: the destination's offered page copy ({@link #shareCopy}), null when none. */
    default SharedCopy sharedCopy() {
        return null;
    }

    /** Breaks the connection (the other side's next call fails with {@code why}); tests inject failures with it. */
    void fail(String why);

    /** Releases the connection's resources. */
    @Override
    void close();
}
