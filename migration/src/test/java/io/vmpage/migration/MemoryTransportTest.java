package io.vmpage.migration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * A connection that ended cleanly gives its pool buffers to the next one; one that failed or did not end
 * keeps them (one of its ends may still hold one), and a closed connection hands out no buffer.
 */
class MemoryTransportTest {
    /** Takes every spare buffer other connections gave back, so that the next acquire shows what this test gave. */
    private static void drainSpares() {
        MemoryTransport all = new MemoryTransport(64, MemoryTransport.DEFAULT_CHUNK, 1_000);
        for (int i = 0; i < 64; i++) {
            all.acquire();
        }
        all.fail("drained");
    }

    /** One chunk through {@code t}: sent, received, released; with {@code end}, finished and its end read. */
    private static ByteBuffer oneChunk(MemoryTransport t, boolean end) {
        ByteBuffer b = t.acquire();
        b.putLong(42).flip();
        t.send(b);
        if (end) {
            t.finish();
        }
        ByteBuffer got = t.receive();
        assertSame(b, got);
        t.release(got);
        if (end) {
            assertNull(t.receive());
        }
        return b;
    }

    @Test
    void aCleanlyEndedConnectionsBuffersServeTheNextOne() {
        drainSpares();
        MemoryTransport first = new MemoryTransport();
        ByteBuffer used = oneChunk(first, true);
        first.close();
        MemoryTransport next = new MemoryTransport();
        ByteBuffer again = next.acquire();
        assertSame(used, again, "the next connection reuses the buffer");
        assertEquals(0, again.position());
        assertEquals(again.capacity(), again.limit());
        next.close();
    }

    @Test
    void aConnectionThatFailedOrNeverEndedKeepsItsBuffers() {
        drainSpares();
        List<ByteBuffer> kept = new ArrayList<>();
        MemoryTransport unfinished = new MemoryTransport();
        kept.add(oneChunk(unfinished, false)); // the source never finished
        unfinished.close();
        MemoryTransport failed = new MemoryTransport();
        kept.add(oneChunk(failed, true));
        failed.fail("dropped");
        failed.close();
        MemoryTransport small = new MemoryTransport(4, 64 << 10, 1_000); // not of the shared size
        kept.add(oneChunk(small, true));
        small.close();
        MemoryTransport next = new MemoryTransport();
        ByteBuffer fresh = next.acquire();
        for (ByteBuffer b : kept) {
            assertNotSame(b, fresh, "a buffer of a connection that did not end cleanly went to another");
        }
        next.close();
    }

    @Test
    void aClosedConnectionHandsOutNoBuffer() {
        MemoryTransport t = new MemoryTransport();
        oneChunk(t, true);
        t.close();
        MigrationException e = assertThrows(MigrationException.class, t::acquire);
        assertTrue(e.getMessage().contains("connection closed"), e.getMessage());
    }
}
