package io.vmpage.engine.memory;

/**
 * The encoding of a guest-physical map entry ({@link GuestPhysicalMap}): one word per guest frame,
 * saying where the frame's contents are. The states and the only functions that build or read an entry.
 *
 * <pre>
 *  entry
 *   63..12                           11..4      3..1   0
 *  +--------------------------------+----------+------+---------+
 *  | payload: machine frame or slot | reserved | kind | present |
 *  +--------------------------------+----------+------+---------+
 *   0                           EMPTY      never populated, or discarded: reads as zeros, a touch populates it
 *   present, kind PRIVATE       payload = the machine frame this VM owns
 *   present, kind SHARED        payload = a shared copy-on-write frame (the host owns it; a write breaks it)
 *   not present, kind BALLOONED given to the balloon: no frame; a guest touch anyway gets a fresh zero frame
 *   not present, kind SWAPPED   payload = the host swap slot holding the contents; a touch swaps it in
 *   not present, kind REMOTE    not here yet (post-copy migration): a touch fetches it from the source
 *   not present, kind FETCHING  payload as before: one thread is bringing it in; others touching it wait
 * </pre>
 * A present entry's frame is reachable by the VM's vCPUs (through EPT or shadow leaves, or PV guest
 * tables); a non-present one has no frame, and an access to it exits to whoever fills that state in.
 * A touch of a SWAPPED or REMOTE frame goes through one mechanism ({@code Vm}'s fetch on fault, its
 * {@code FrameFetcher}): the touching thread claims the entry (FETCHING), the fetcher fills a fresh
 * frame, the entry becomes PRIVATE. Ballooning and host swap add their producers in later issues. The class initializer
 * checks that the fields do not overlap ({@link BitFields}).
 */
public final class P2mEntry {
    public static final long EMPTY = 0;
    public static final long PRESENT = 1;
    public static final int KIND_SHIFT = 1;
    public static final long KIND_MASK = 0x7L << KIND_SHIFT;
    public static final long RESERVED_MASK = 0xFF0L;
    public static final int PAYLOAD_SHIFT = 12;
    public static final long PAYLOAD_MASK = -1L << PAYLOAD_SHIFT;
    /** Largest machine frame or swap slot a payload holds. */
    public static final long MAX_PAYLOAD = PAYLOAD_MASK >>> PAYLOAD_SHIFT;

    /** Kind of a present entry: a frame the VM owns. */
    public static final int PRIVATE = 0;
    /** Kind of a present entry: a frame shared copy-on-write. */
    public static final int SHARED = 1;
    /** Kind of a non-present entry: ballooned out. */
    public static final int BALLOONED = 2;
    /** Kind of a non-present entry: on host swap. */
    public static final int SWAPPED = 3;
    /** Kind of a non-present entry: still on the migration source. */
    public static final int REMOTE = 4;
    /** Kind of a non-present entry: being brought in (from swap or the source) by one thread. */
    public static final int FETCHING = 5;

    static {
        BitFields.requireDisjoint("guest-physical map entry", "present", PRESENT, "kind", KIND_MASK,
            "reserved", RESERVED_MASK, "payload", PAYLOAD_MASK);
        if ((PRESENT | KIND_MASK | RESERVED_MASK | PAYLOAD_MASK) != -1L) {
            throw new IllegalStateException("guest-physical map entry: fields do not cover the word");
        }
    }

    private P2mEntry() {
    }

    /** A present entry of kind PRIVATE for machine frame {@code mfn}. */
    public static long privateFrame(long mfn) {
        return payload(mfn) | ((long) PRIVATE << KIND_SHIFT) | PRESENT;
    }

    /** A present entry of kind SHARED for shared machine frame {@code mfn}. */
    public static long sharedFrame(long mfn) {
        return payload(mfn) | ((long) SHARED << KIND_SHIFT) | PRESENT;
    }

    /** A non-present entry of {@code kind} (BALLOONED, SWAPPED or REMOTE) with {@code payload}. */
    public static long notPresent(int kind, long payload) {
        if (kind != BALLOONED && kind != SWAPPED && kind != REMOTE && kind != FETCHING) {
            throw new IllegalArgumentException("kind " + kind + " is not a non-present state");
        }
        return payload(payload) | ((long) kind << KIND_SHIFT);
    }

    public static boolean isPresent(long entry) {
        return (entry & PRESENT) != 0;
    }

    public static int kind(long entry) {
        return (int) ((entry & KIND_MASK) >>> KIND_SHIFT);
    }

    /** The machine frame of a present entry, -1 for any other. */
    public static long frame(long entry) {
        return (entry & PRESENT) != 0 ? entry >>> PAYLOAD_SHIFT : -1;
    }

    /** The payload (machine frame, swap slot) of any entry. */
    public static long payloadOf(long entry) {
        return entry >>> PAYLOAD_SHIFT;
    }

    /** The state's name, as messages print it. */
    public static String describe(long entry) {
        if (entry == EMPTY) {
            return "empty";
        }
        switch (kind(entry)) {
            case PRIVATE: return isPresent(entry) ? "private frame " + payloadOf(entry) : "kind 0 without a frame";
            case SHARED: return "shared frame " + payloadOf(entry);
            case BALLOONED: return "ballooned";
            case SWAPPED: return "swapped to slot " + payloadOf(entry);
            case REMOTE: return "remote (not migrated yet)";
            case FETCHING: return "being brought in";
            default: return "kind " + kind(entry);
        }
    }

    private static long payload(long value) {
        if (value < 0 || value > MAX_PAYLOAD) {
            throw new IllegalArgumentException("payload " + value + " does not fit a guest-physical map entry");
        }
        return value << PAYLOAD_SHIFT;
    }
}
