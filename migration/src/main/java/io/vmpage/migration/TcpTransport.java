package io.vmpage.migration;

import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.util.concurrent.ArrayBlockingQueue;
import org.jctools.queues.MpscArrayQueue;

/**
 * One end of a migration connection over TCP, as QEMU's {@code tcp:} migration runs it: the stream's
 * chunks go source to destination, each framed as a 4-byte length and its bytes (length -1 ends the
 * stream); post-copy's return path (QEMU's {@code rp} thread) runs the other way on the same socket,
 * 8 bytes per guest frame asked for. The source end is made by {@link #connect}, the destination end
 * by {@link #accept}; each implements only its side's half of {@link Transport} and refuses the other.
 *
 * <p>Failure: a peer that closes or resets the socket, or a destination that hears nothing for the stall
 * timeout, fails the next call with a {@link MigrationException}; {@link #fail} closes the socket, so the
 * peer's next read or write fails too. A chunk longer than the agreed size is a corrupted stream.
 *
 * <p>Threads: as {@link Transport}; {@link #request} may come from any destination thread (faulting
 * vCPUs) and is serialized on the socket; the source end runs one reader thread for the return path.
 */
public final class TcpTransport implements Transport {
    private static final int END = -1;
    private static final int BUFFERS = 4;

    private final Socket socket;
    private final boolean source;
    private final int chunkBytes;
    private final DataInputStream in;
    private final DataOutputStream out;
    private final ArrayBlockingQueue<ByteBuffer> pool = new ArrayBlockingQueue<>(BUFFERS);
    /** Source end: guest frames the destination asked for, filled by the return-path reader. */
    private final MpscArrayQueue<Long> requests = new MpscArrayQueue<>(1 << 16);
    private final Thread returnPath;
    /** Why the connection broke, null while it works. Written once, read by every caller. */
    private volatile String failure;
    /** Destination end: the END frame arrived. Destination thread only. */
    private boolean ended;

    private TcpTransport(Socket socket, boolean source, int chunkBytes, long stallMillis) throws IOException {
        if (chunkBytes < 16 << 10) {
            throw new IllegalArgumentException("a migration chunk needs at least 16 KiB");
        }
        this.socket = socket;
        this.source = source;
        this.chunkBytes = chunkBytes;
        socket.setTcpNoDelay(true);
        socket.setSoTimeout((int) Math.min(Integer.MAX_VALUE, stallMillis));
        this.in = new DataInputStream(socket.getInputStream());
        this.out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream(), 64 << 10));
        for (int i = 0; i < BUFFERS; i++) {
            pool.add(ByteBuffer.allocate(chunkBytes));
        }
        if (source) {
            returnPath = new Thread(this::readRequests, "migration-return-path");
            returnPath.setDaemon(true);
            returnPath.start();
        } else {
            returnPath = null;
        }
    }

    /** The source end: connects to a destination listening at {@code address}. */
    public static TcpTransport connect(InetSocketAddress address, int chunkBytes, long stallMillis) {
        Socket socket = new Socket();
        try {
            socket.connect(address, (int) Math.min(Integer.MAX_VALUE, stallMillis));
            return new TcpTransport(socket, true, chunkBytes, stallMillis);
        } catch (IOException e) {
            closeQuietly(socket);
            throw new MigrationException("cannot connect to the destination at " + address + ": " + e.getMessage(), e);
        }
    }

    /** The destination end: waits (at most the stall timeout) for a source to connect to {@code listener}. */
    public static TcpTransport accept(ServerSocket listener, int chunkBytes, long stallMillis) {
        try {
            listener.setSoTimeout((int) Math.min(Integer.MAX_VALUE, stallMillis));
            Socket socket = listener.accept();
            return new TcpTransport(socket, false, chunkBytes, stallMillis);
        } catch (SocketTimeoutException e) {
            throw new MigrationException("no source connected within " + stallMillis + " ms", e);
        } catch (IOException e) {
            throw new MigrationException("accepting the source's connection failed: " + e.getMessage(), e);
        }
    }

    /**
     * Both ends of one connection over loopback in this process, joined into one {@link Transport} for
     * {@link Migration#toHost}: the source's calls go to the source end, the destination's to the other.
     */
    public static Transport loopback(int chunkBytes, long stallMillis) {
        try (ServerSocket listener = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            TcpTransport sourceEnd = connect((InetSocketAddress) listener.getLocalSocketAddress(), chunkBytes, stallMillis);
            TcpTransport destinationEnd;
            try {
                destinationEnd = accept(listener, chunkBytes, stallMillis);
            } catch (RuntimeException e) {
                sourceEnd.close();
                throw e;
            }
            return new Joined(sourceEnd, destinationEnd);
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
            out.writeInt(filled.remaining());
            out.write(filled.array(), filled.arrayOffset() + filled.position(), filled.remaining());
            out.flush(); // a short chunk is a post-copy flush: a vCPU waits for it
        } catch (IOException e) {
            throw lost("sending to the destination", e);
        } finally {
            pool.offer(filled);
        }
    }

    @Override
    public void finish() {
        requireSide(true, "finish");
        check();
        try {
            out.writeInt(END);
            out.flush();
        } catch (IOException e) {
            throw lost("ending the stream", e);
        }
    }

    @Override
    public ByteBuffer receive() {
        requireSide(false, "receive");
        if (ended) {
            return null;
        }
        check();
        try {
            int length = in.readInt();
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
            b.clear();
            in.readFully(b.array(), 0, length);
            b.limit(length);
            return b;
        } catch (SocketTimeoutException e) {
            fail("stalled: the source sent nothing for " + stallMillis() + " ms");
            throw lost("receiving", e);
        } catch (EOFException e) {
            fail("the source closed the connection before the end of the stream");
            throw lost("receiving", e);
        } catch (IOException e) {
            throw lost("receiving from the source", e);
        }
    }

    @Override
    public void release(ByteBuffer buffer) {
        pool.offer(buffer);
    }

    @Override
    public void request(long gfn) {
        requireSide(false, "request");
        check();
        synchronized (out) {
            try {
                out.writeLong(gfn);
                out.flush();
            } catch (IOException e) {
                throw lost("asking the source for a page", e);
            }
        }
    }

    @Override
    public long pollRequest() {
        requireSide(true, "pollRequest");
        check();
        Long gfn = requests.relaxedPoll();
        return gfn == null ? -1 : gfn;
    }

    /** Source end: reads the return path until the socket closes. */
    private void readRequests() {
        try {
            while (true) {
                long gfn;
                try {
                    gfn = in.readLong(); // the source end reads nothing else
                } catch (SocketTimeoutException idle) {
                    continue; // a destination that asks for nothing is not a stalled one
                }
                while (!requests.offer(gfn)) {
                    if (failure != null) {
                        return;
                    }
                    Thread.onSpinWait();
                }
            }
        } catch (EOFException e) {
            if (failure == null) {
                fail("the destination closed the connection");
            }
        } catch (IOException e) {
            if (failure == null) {
                fail("the return path broke: " + e.getMessage());
            }
        }
    }

    @Override
    public void fail(String why) {
        if (failure == null) {
            failure = why;
        }
        closeQuietly(socket); // the peer's next read or write fails too
    }

    @Override
    public void close() {
        if (failure == null) {
            failure = "connection closed";
        }
        if (source && !socket.isClosed()) {
            try {
                out.flush();
                socket.shutdownOutput(); // let the destination read what was sent before the close
            } catch (IOException ignored) {
                // closing anyway
            }
        }
        closeQuietly(socket);
    }

    private long stallMillis() {
        try {
            return socket.getSoTimeout();
        } catch (IOException e) {
            return 0;
        }
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

    private static void closeQuietly(Socket socket) {
        try {
            socket.close();
        } catch (IOException ignored) {
            // nothing left to release
        }
    }

    /** Both ends of one connection as one {@link Transport} (one process plays both hosts). */
    private static final class Joined implements Transport {
        private final TcpTransport sourceEnd;
        private final TcpTransport destinationEnd;

        Joined(TcpTransport sourceEnd, TcpTransport destinationEnd) {
            this.sourceEnd = sourceEnd;
            this.destinationEnd = destinationEnd;
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
        public void fail(String why) {
            sourceEnd.fail(why);
            destinationEnd.fail(why);
        }

        @Override
        public void close() {
            sourceEnd.close();
            destinationEnd.close();
        }
    }
}
