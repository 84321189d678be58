package io.vmpage.migration;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** The XBZRLE codec alone: what it encodes decodes to the new page, and a bad delta is refused by name. */
class XbzrleTest {
    private static final int PAGE = Xbzrle.PAGE;

    /** Encodes {@code cur} against {@code old} and decodes the delta onto a copy of {@code old}. */
    private static int roundTrip(byte[] old, byte[] cur) {
        byte[] delta = new byte[PAGE];
        int length = Xbzrle.encode(old, 0, cur, 0, delta, PAGE - 3);
        if (length >= 0) {
            byte[] rebuilt = old.clone();
            ByteBuffer in = ByteBuffer.wrap(delta, 0, length);
            Xbzrle.decode(in, length, rebuilt);
            assertEquals(length, in.position(), "the decoder reads the whole delta");
            assertArrayEquals(cur, rebuilt, "the delta rebuilds the new page");
        }
        return length;
    }

    @Test
    void randomChangesAtEveryOffsetAndAlignmentRoundTrip() {
        SplittableRandom random = new SplittableRandom(20261202);
        for (int trial = 0; trial < 5_000; trial++) {
            byte[] old = new byte[PAGE];
            random.nextBytes(old);
            byte[] cur = old.clone();
            int changes = random.nextInt(1, 40);
            for (int c = 0; c < changes; c++) {
                int at = random.nextInt(PAGE);
                int run = Math.min(PAGE - at, random.nextInt(1, 24));
                for (int i = 0; i < run; i++) {
                    cur[at + i] = (byte) (cur[at + i] + random.nextInt(1, 256)); // changed for sure
                }
            }
            assertTrue(roundTrip(old, cur) > 0, "trial " + trial + ": a changed page has a delta that fits");
        }
    }

    @Test
    void theFirstAndTheLastByteOfThePageAreFound() {
        byte[] old = new byte[PAGE];
        byte[] cur = old.clone();
        cur[0] = 1;
        cur[PAGE - 1] = 2;
        assertEquals(1 + 1 + 1 + 2 + 1 + 1, roundTrip(old, cur), "run 0, 1 byte, run 4094 (two bytes), 1 byte");
    }

    @Test
    void anUnchangedPageEncodesToNothingAndAFullyChangedOneOverflows() {
        byte[] old = new byte[PAGE];
        new SplittableRandom(1).nextBytes(old);
        assertEquals(0, roundTrip(old, old.clone()));
        byte[] cur = old.clone();
        for (int i = 0; i < PAGE; i++) {
            cur[i] ^= (byte) 0x5a;
        }
        assertEquals(-1, roundTrip(old, cur), "a delta no smaller than the page is refused");
    }

    /** Changes eight bytes apart or closer travel as one run; a whole unchanged word ends a run. */
    @Test
    void nearbyChangesShareARun() {
        byte[] old = new byte[PAGE];
        byte[] cur = old.clone();
        cur[16] = 1;
        cur[20] = 1; // same word: one run of 5 bytes
        cur[40] = 1; // words 24..31 and 32..39 unchanged: a second run
        assertEquals(1 + 1 + 5 + 1 + 1 + 1, roundTrip(old, cur));
    }

    @Test
    void malformedDeltasAreRefusedWithWhatIsWrong() {
        byte[] page = new byte[PAGE];
        assertTrue(decodeFails(page, 4095 & 0x7f | 0x80, 4095 >>> 7, 2, 1, 1).contains("past its 4096 bytes"));
        assertTrue(decodeFails(page, 3, 0).contains("empty changed run"));
        assertTrue(decodeFails(page, 3, 5, 1, 2).contains("changed run of 5 bytes"));
        assertTrue(decodeFails(page, 0x80).contains("cut off"));
        assertTrue(decodeFails(page, 0x80, 0x80, 0x80, 0x01, 1, 7).contains("longer than three bytes"));
    }

    private static String decodeFails(byte[] page, int... bytes) {
        ByteBuffer in = ByteBuffer.allocate(bytes.length);
        for (int b : bytes) {
            in.put((byte) b);
        }
        in.flip();
        return assertThrows(IllegalArgumentException.class, () -> Xbzrle.decode(in, bytes.length, page)).getMessage();
    }
}
