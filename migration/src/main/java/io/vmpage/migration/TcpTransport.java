package io.vmpage.migration;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.TimeUnit;
import org.jctools.queues.MpscArrayQueue;

/**
 * One end of a migration connection over TCP, as QEMU's {@code tcp:} migration runs it, on a
 * non-blocking NIO socket: the stream's chunks go source to destination, each framed as a 4-byte length
 * and its bytes (length -1 ends the stream), written by one gathering write straight from the pooled
 * direct chunk (no copy, no allocation per chunk); the return path (QEMU's {@code rp} thread) runs the
 * other way on the same socket: 8 bytes per guest frame asked for (post-copy), and one reply at the end
 * of a migration between two processes ({@link #reply}, {@link RemoteMigration}).
 *
 * <pre>
 *  source -> destination   | length s32 | length bytes of stream |  ...  | -1 |
 *  destination -> source   | gfn s64 >= 0 |  ...  | REPLY s64 = -2 | words s32 | words x s64 |
 * </pre>
 *
 * <p>Failure: a peer that closes or resets the socket fails the next call with a {@link
 * MigrationException}; so does a write the peer does not take within the stall timeout (the source's
 * write deadline) and a destination that hears nothing for that long. {@link #fail} closes the socket,
 * so the peer's next read or write fails too. A chunk longer than the agreed size is a corrupted stream.
 *
 * <p>Threads: as {@link Transport}; {@link #request} may come from any destination thread (faulting
 * vCPUs) and is serialized on the socket; the source end runs one reader thread for the return path.
 */
public final class TcpTransport implements Transport {
    private static final int END = -1;
    private static final long REPLY = -2;
    private static final int BUFFERS = 4;
    /** A reply carries at most this many words (a 1 TiB guest's frame hashes would be 2^28). */
    private static final int MAX_REPLY_WORDS = 1 << 28;

    private final SocketChannel channel;
    private final boolean source;
    private final int chunkBytes;
    private final long stallNanos;
    /** Waits for the socket to take bytes (sending side) and to have bytes (receiving side). */
    private final Selector writable;
    private final Selector readable;
    private final ArrayBlockingQueue<ByteBuffer> pool = new ArrayBlockingQueue<>(BUFFERS);
    /** Source thread only: the frame header and the gathering write's array. */
    private final ByteBuffer header = ByteBuffer.allocateDirect(4);
    private final ByteBuffer[] frame = new ByteBuffer[2];
    /** Destination threads, under {@link #writeLock}: one return-path message. */
    private final ByteBuffer word = ByteBuffer.allocateDirect(8);
    private final ByteBuffer[] wordFrame = {word};
    private final Object writeLock = new Object();
    /** Source end: guest frames the destination asked for, filled by the return-path reader. */
    private final MpscArrayQueue<Long> requests = new MpscArrayQueue<>(1 << 16);
    /** Source end: the destination's reply, completed by the return-path reader. */
    private final java.util.concurrent.LinkedBlockingQueue<long[]> replied = new java.util.concurrent.LinkedBlockingQueue<>();
    /** A reply that stands for the return path's end in {@link #replied}. */
    private static final long[] RETURN_PATH_ENDED = new long[0];
    private final Thread returnPath;
    /** Why the connection broke, null while it works. Written once, read by every caller. */
    private volatile String failure;
    /** Destination end: the END frame arrived. Destination thread only. */
    private boolean ended;
    /** Source end: where it connected; multifd channels connect there too (null at the destination end). */
    private final InetSocketAddress peer;
    /** Destination end: the listener it was accepted on, where the channels arrive (null at the source end). */
    private final ServerSocketChannel listener;
    /** Multifd channels opened through this connection (failed and closed with it). */
    private final java.util.List<TcpTransport> channels = new java.util.concurrent.CopyOnWriteArrayList<>();

    private TcpTransport(SocketChannel channel, InetSocketAddress peer, ServerSocketChannel listener, int chunkBytes, long stallMillis)
        throws IOException {
        if (chunkBytes < 16 << 10) {
            throw new IllegalArgumentException("a migration chunk needs at least 16 KiB");
        }
        this.channel = channel;
        this.source = peer != null;
        this.peer = peer;
        this.listener = listener;
        this.chunkBytes = chunkBytes;
        this.stallNanos = TimeUnit.MILLISECONDS.toNanos(stallMillis);
        channel.setOption(StandardSocketOptions.TCP_NODELAY, true);
        channel.configureBlocking(false);
        this.writable = Selector.open();
        this.readable = Selector.open();
        channel.register(writable, SelectionKey.OP_WRITE);
        channel.register(readable, SelectionKey.OP_READ);
        for (int i = 0; i < BUFFERS; i++) {
            pool.add(ByteBuffer.allocateDirect(chunkBytes));
        }
        frame[0] = header;
        if (source) {
            returnPath = new Thread(this::readReturnPath, "migration-return-path");
            returnPath.setDaemon(true);
            returnPath.start();
        } else {
            returnPath = null;
        }
    }

    /** The source end: connects to a destination listening at {@code address}. */
    public static TcpTransport connect(InetSocketAddress address, int chunkBytes, long stallMillis) {
        SocketChannel channel = null;
        try {
            channel = SocketChannel.open();
            channel.socket().connect(address, (int) Math.min(Integer.MAX_VALUE, stallMillis));
            return new TcpTransport(channel, address, null, chunkBytes, stallMillis);
        } catch (IOException e) {
            closeQuietly(channel);
            throw new MigrationException("cannot connect to the destination at " + address + ": " + e.getMessage(), e);
        }
    }

    /** A listener for {@link #accept} on {@code address} (port 0: any free port). */
    public static ServerSocketChannel listen(InetSocketAddress address) {
        try {
            ServerSocketChannel listener = ServerSocketChannel.open();
            listener.bind(address, 1 + MigrationConfig.MAX_CHANNELS); // a source connects its multifd channels at once
            return listener;
        } catch (IOException e) {
            throw new MigrationException("cannot listen on " + address + ": " + e.getMessage(), e);
        }
    }

    /** The destination end: waits (at most {@code waitMillis}, 0: for ever) for a source to connect to {@code listener}. */
    public static TcpTransport accept(ServerSocketChannel listener, int chunkBytes, long stallMillis, long waitMillis) {
        SocketChannel channel = null;
        try (Selector waiting = Selector.open()) {
            listener.configureBlocking(false);
            SelectionKey key = listener.register(waiting, SelectionKey.OP_ACCEPT);
            long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(waitMillis);
            while ((channel = listener.accept()) == null) {
                long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
                if (waitMillis > 0 && left <= 0) {
                    throw new MigrationException("no source connected within " + waitMillis + " ms");
                }
                waiting.select(waitMillis > 0 ? Math.max(1, left) : 0);
                waiting.selectedKeys().clear();
            }
            key.cancel();
            return new TcpTransport(channel, null, listener, chunkBytes, stallMillis);
        } catch (IOException e) {
            closeQuietly(channel);
            throw new MigrationException("accepting the source's connection failed: " + e.getMessage(), e);
        }
    }

    /** {@link #accept} waiting at most the stall timeout. */
    public static TcpTransport accept(ServerSocketChannel listener, int chunkBytes, long stallMillis) {
        return accept(listener, chunkBytes, stallMillis, stallMillis);
    }

    /**
     * Both ends of one connection over loopback in this process, joined into one {@link Transport} for
     * {@link Migration#toHost}: the source's calls go to the source end, the destination's to the other.
     */
    public static Transport loopback(int chunkBytes, long stallMillis) {
        try (ServerSocketChannel listener = listen(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            TcpTransport sourceEnd = connect((InetSocketAddress) listener.getLocalAddress(), chunkBytes, stallMillis);
            TcpTransport destinationEnd;
            try {
                destinationEnd = accept(listener, chunkBytes, stallMillis);
            } catch (RuntimeException e) {
                sourceEnd.close();
                throw e;
            }
            return new Joined(sourceEnd, destinationEnd, chunkBytes, stallMillis);
        } catch (IOException e) {
            throw new MigrationException("cannot open a loopback listener: " + e.getMessage(), e);
        }
    }

    @Override
    public ByteBuffer acquire() {
        requireSide(true, "acquire");
        check();
        ByteBuffer b = pool.poll(); // the source thread returns each buffer in send: one is always there
        if (b == null) {
            throw new IllegalStateException("every buffer of the TCP transport is in flight: acquire without send");
        }
        b.clear();
        return b;
    }

    @Override
    public void send(ByteBuffer filled) {
        requireSide(true, "send");
        check();
        try {
            header.clear().putInt(filled.remaining()).flip();
            frame[1] = filled;
            writeFully(frame, "sending to the destination");
        } finally {
            frame[1] = null;
            pool.offer(filled);
        }
    }

    @Override
    public void finish() {
        requireSide(true, "finish");
        check();
        header.clear().putInt(END).flip();
        frame[1] = ByteBuffer.allocate(0);
        writeFully(frame, "ending the stream");
        frame[1] = null;
    }

    @Override
    public ByteBuffer receive() {
        requireSide(false, "receive");
        if (ended) {
            return null;
        }
        check();
        header.clear();
        readFully(header, true, "the source closed the connection before the end of the stream");
        int length = header.getInt(0);
        if (length == END) {
            ended = true;
            return null;
        }
        if (length < 0 || length > chunkBytes) {
            fail("stream is corrupted: a chunk of " + length + " bytes (at most " + chunkBytes + ")");
            check();
        }
        ByteBuffer b = pool.poll(); // the destination thread releases each buffer before it receives the next
        if (b == null) {
            throw new IllegalStateException("every buffer of the TCP transport is held: receive without release");
        }
        b.clear().limit(length);
        try {
            readFully(b, true, "the source closed the connection before the end of the stream");
        } catch (RuntimeException e) {
            pool.offer(b);
            throw e;
        }
        return b.flip();
    }

    @Override
    public void release(ByteBuffer buffer) {
        pool.offer(buffer);
    }

    @Override
    public void request(long gfn) {
        requireSide(false, "request");
        check();
        synchronized (writeLock) {
            word.clear().putLong(gfn).flip();
            writeFully(wordFrame, "asking the source for a page");
        }
    }

    /**
     * Destination end: the one reply of a migration between two processes, {@code words} back to the
     * source ({@link #awaitReply}).
     */
    @Override
    public void reply(long[] words) {
        requireSide(false, "reply");
        check();
        ByteBuffer b = ByteBuffer.allocateDirect(12 + 8 * words.length);
        b.putLong(REPLY).putInt(words.length);
        for (long w : words) {
            b.putLong(w);
        }
        synchronized (writeLock) {
            writeFully(new ByteBuffer[] {b.flip()}, "replying to the source");
        }
    }

    /** Source end: the destination's {@link #reply}, waiting at most {@code millis}. */
    @Override
    public long[] awaitReply(long millis) {
        requireSide(true, "awaitReply");
        try {
            long[] reply = replied.poll(millis, TimeUnit.MILLISECONDS);
            if (reply == null) {
                fail("the destination did not reply within " + millis + " ms");
                throw new MigrationException("migration connection lost: " + failure);
            }
            if (reply == RETURN_PATH_ENDED) {
                replied.add(reply); // for the next caller too
                check();
                throw new MigrationException("migration connection lost: the return path ended");
            }
            return reply;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new MigrationException("interrupted while waiting for the destination's reply", e);
        }
    }

    @Override
    public long pollRequest() {
        requireSide(true, "pollRequest");
        check();
        Long gfn = requests.relaxedPoll();
        return gfn == null ? -1 : gfn;
    }

    /** Source end: reads the return path until the socket closes (an idle destination is not a stalled one). */
    private void readReturnPath() {
        ByteBuffer in = ByteBuffer.allocateDirect(8);
        try {
            while (true) {
                in.clear();
                readFully(in, false, "the destination closed the connection");
                long gfn = in.getLong(0);
                if (gfn == REPLY) {
                    in.clear().limit(4);
                    readFully(in, false, "the destination closed the connection inside its reply");
                    int n = in.getInt(0);
                    if (n < 0 || n > MAX_REPLY_WORDS) {
                        fail("the destination's reply announces " + n + " words");
                        break;
                    }
                    ByteBuffer words = ByteBuffer.allocateDirect(8 * n);
                    readFully(words, false, "the destination closed the connection inside its reply");
                    long[] reply = new long[n];
                    words.flip().asLongBuffer().get(reply);
                    replied.add(reply);
                    continue;
                }
                while (!requests.offer(gfn)) {
                    if (failure != null) {
                        return;
                    }
                    Thread.onSpinWait();
                }
            }
        } catch (RuntimeException e) {
            // the connection broke: failure says why
        } finally {
            replied.add(RETURN_PATH_ENDED);
        }
    }

    /** Writes every byte of {@code buffers}, waiting at most the stall timeout each time the socket takes none. */
    private void writeFully(ByteBuffer[] buffers, String doing) {
        try {
            long deadline = System.nanoTime() + stallNanos;
            while (buffers[buffers.length - 1].hasRemaining() || buffers[0].hasRemaining()) {
                if (channel.write(buffers) > 0) {
                    deadline = System.nanoTime() + stallNanos;
                    continue;
                }
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    fail("stalled: the peer took nothing for " + TimeUnit.NANOSECONDS.toMillis(stallNanos) + " ms while "
                        + doing);
                    check();
                }
                writable.select(Math.max(1, TimeUnit.NANOSECONDS.toMillis(left)));
                writable.selectedKeys().clear();
                check();
            }
        } catch (ClosedChannelException e) {
            check();
            throw lost(doing, e);
        } catch (IOException e) {
            throw lost(doing, e);
        }
    }

    /**
     * Reads until {@code b} is full. With {@code deadline}, fails when nothing arrives for the stall
     * timeout; without, waits for ever (a return path with nothing to say), until the socket closes.
     */
    private void readFully(ByteBuffer b, boolean deadline, String onEnd) {
        try {
            long due = System.nanoTime() + stallNanos;
            while (b.hasRemaining()) {
                int n = channel.read(b);
                if (n < 0) {
                    fail(onEnd);
                    check();
                }
                if (n > 0) {
                    due = System.nanoTime() + stallNanos;
                    continue;
                }
                long left = due - System.nanoTime();
                if (deadline && left <= 0) {
                    fail("stalled: the " + (source ? "destination" : "source") + " sent nothing for "
                        + TimeUnit.NANOSECONDS.toMillis(stallNanos) + " ms");
                    check();
                }
                readable.select(deadline ? Math.max(1, TimeUnit.NANOSECONDS.toMillis(left)) : 100);
                readable.selectedKeys().clear();
                check();
            }
        } catch (ClosedChannelException e) {
            check();
            throw lost("receiving", e);
        } catch (IOException e) {
            throw lost("receiving", e);
        }
    }

    /**
     * Source end: a new connection to the same destination. Destination end: the next connection on the
     * listener this one came from (whatever its index: the stream in it says which channel it is),
     * waited for at most the stall timeout.
     */
    @Override
    public Transport channel(int index) {
        if (index < 1) {
            throw new IllegalArgumentException("multifd channels are numbered from 1: " + index);
        }
        check();
        long stallMillis = TimeUnit.NANOSECONDS.toMillis(stallNanos);
        TcpTransport c = source ? connect(peer, chunkBytes, stallMillis) : accept(listener, chunkBytes, stallMillis, stallMillis);
        channels.add(c);
        if (failure != null) { // failed meanwhile
            c.fail(failure);
        }
        return c;
    }

    @Override
    public void fail(String why) {
        if (failure == null) {
            failure = why;
        }
        closeQuietly(channel); // the peer's next read or write fails too
        writable.wakeup();
        readable.wakeup();
        channels.forEach(c -> c.fail(why));
    }

    @Override
    public void close() {
        channels.forEach(TcpTransport::close);
        if (failure == null) {
            failure = "connection closed";
        }
        if (source && channel.isOpen()) {
            try {
                channel.shutdownOutput(); // let the destination read what was sent before the close
            } catch (IOException ignored) {
                // closing anyway
            }
        }
        closeQuietly(channel);
        closeQuietly(writable);
        closeQuietly(readable);
    }

    private void requireSide(boolean sourceSide, String call) {
        if (source != sourceSide) {
            throw new IllegalStateException(call + " is for the " + (sourceSide ? "source" : "destination") + " end of a migration"
                + " connection; this is the " + (source ? "source" : "destination") + " end");
        }
    }

    private void check() {
        String why = failure;
        if (why != null) {
            throw new MigrationException("migration connection lost: " + why);
        }
    }

    private MigrationException lost(String doing, IOException e) {
        fail(doing + ": " + e.getMessage());
        return new MigrationException("migration connection lost: " + failure, e);
    }

    private static void closeQuietly(java.io.Closeable c) {
        if (c == null) {
            return;
        }
        try {
            c.close();
        } catch (IOException ignored) {
            // nothing left to release
        }
    }

    /** Both ends of one connection as one {@link Transport} (one process plays both hosts). */
    private static final class Joined implements Transport {
        private final TcpTransport sourceEnd;
        private final TcpTransport destinationEnd;
        private final int chunkBytes;
        private final long stallMillis;
        /** Multifd channels by index, each its own loopback connection, made by whichever end asks first. */
        private final java.util.Map<Integer, Transport> channels = new java.util.concurrent.ConcurrentHashMap<>();

        Joined(TcpTransport sourceEnd, TcpTransport destinationEnd, int chunkBytes, long stallMillis) {
            this.sourceEnd = sourceEnd;
            this.destinationEnd = destinationEnd;
            this.chunkBytes = chunkBytes;
            this.stallMillis = stallMillis;
        }

        @Override
        public Transport channel(int index) {
            if (index < 1) {
                throw new IllegalArgumentException("multifd channels are numbered from 1: " + index);
            }
            sourceEnd.check();
            return channels.computeIfAbsent(index, i -> loopback(chunkBytes, stallMillis));
        }

        @Override
        public ByteBuffer acquire() {
            return sourceEnd.acquire();
        }

        @Override
        public void send(ByteBuffer filled) {
            sourceEnd.send(filled);
        }

        @Override
        public void finish() {
            sourceEnd.finish();
        }

        @Override
        public ByteBuffer receive() {
            return destinationEnd.receive();
        }

        @Override
        public void release(ByteBuffer buffer) {
            destinationEnd.release(buffer);
        }

        @Override
        public void request(long gfn) {
            destinationEnd.request(gfn);
        }

        @Override
        public long pollRequest() {
            return sourceEnd.pollRequest();
        }

        @Override
        public void reply(long[] words) {
            destinationEnd.reply(words);
        }

        @Override
        public long[] awaitReply(long millis) {
            return sourceEnd.awaitReply(millis);
        }

        @Override
        public void fail(String why) {
            sourceEnd.fail(why);
            destinationEnd.fail(why);
            channels.values().forEach(c -> c.fail(why));
        }

        @Override
        public void close() {
            channels.values().forEach(Transport::close);
            sourceEnd.close();
            destinationEnd.close();
        }
    }
}
