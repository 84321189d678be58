package io.vmpage.mmu;

/**
 * The kind of a memory access, encoded with the bits the #PF error code uses for it, so a fault's error
 * code is {@code P | RSVD | access}.
 *
 * <pre>
 *   4     3      2     1     0
 *  +-----+------+-----+-----+---+
 *  | I/D | RSVD | U/S | W/R | P |     #PF error code (SDM 4.7); an access sets W/R, U/S, I/D
 *  +-----+------+-----+-----+---+
 * </pre>
 * A supervisor data read is 0.
 */
public final class Access {
    public static final int READ = 0;
    public static final int WRITE = 1 << 1;
    public static final int USER = 1 << 2;
    public static final int FETCH = 1 << 4;

    private Access() {
    }

    /** A compact 3-bit index of an access (bit 0 write, bit 1 user, bit 2 fetch), for permission masks. */
    static int index(int access) {
        return ((access >>> 1) & 3) | ((access >>> 2) & 4);
    }

    public static boolean isWrite(int access) {
        return (access & WRITE) != 0;
    }

    public static boolean isUser(int access) {
        return (access & USER) != 0;
    }

    public static boolean isFetch(int access) {
        return (access & FETCH) != 0;
    }

    /** "read", "write" or "fetch", with a "user " prefix for user-mode accesses. */
    public static String describe(int access) {
        String kind = isFetch(access) ? "fetch" : isWrite(access) ? "write" : "read";
        return isUser(access) ? "user " + kind : kind;
    }
}
