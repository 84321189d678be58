package io.vmpage.engine.memory;

/**
 * The encoding of a machine frame's descriptor word in the {@link FrameTable}, in one place: the layout,
 * every frame type, and the only functions that assemble or take apart a descriptor.
 *
 * <pre>
 *  frame descriptor (one long per machine frame)
 *   63   62   61..56    55..40          39..24            23..0
 *  +----+----+--------+---------------+-----------------+----------+
 *  |used|free| type   | owner VM id   | reference count | reserved |
 *  +----+----+--------+---------------+-----------------+----------+
 *   used  : was handed out at least once (its contents may be non-zero; zeroed before reuse)
 *   free  : on the free list
 *   type  : what the frame holds (TYPE_*)
 *   owner : VM id (0 = the host itself: EPT and shadow tables, shared frames)
 *   refs  : mappings that share the frame (copy-on-write), or 1 + the paravirtual type count
 * </pre>
 * The class initializer checks that the fields do not overlap ({@link BitFields}).
 */
public final class FrameDescriptor {
    public static final long USED = 1L << 63;
    public static final long FREE = 1L << 62;
    public static final int TYPE_SHIFT = 56;
    public static final long TYPE_MASK = 0x3FL << TYPE_SHIFT;
    public static final int OWNER_SHIFT = 40;
    public static final long OWNER_MASK = 0xFFFFL << OWNER_SHIFT;
    public static final int REFS_SHIFT = 24;
    public static final long REFS_MASK = 0xFFFFL << REFS_SHIFT;
    /** One reference, to add to or subtract from a descriptor. */
    public static final long REF_ONE = 1L << REFS_SHIFT;
    /** Bits no field uses (must stay zero). */
    public static final long RESERVED_MASK = (1L << REFS_SHIFT) - 1;

    /** Frame holds guest data. */
    public static final int TYPE_DATA = 0;
    /** Frame holds a host-owned paging structure (EPT or shadow table). */
    public static final int TYPE_HOST_TABLE = 1;
    /** Paravirtual: a validated L1 page table (Xen's {@code PGT_l1_page_table}). */
    public static final int TYPE_L1 = 2;
    /** Paravirtual: a validated L2 page table (page directory). */
    public static final int TYPE_L2 = 3;
    /** Paravirtual: a validated L3 page table (PDPT). */
    public static final int TYPE_L3 = 4;
    /** Paravirtual: a validated L4 page table (PML4). */
    public static final int TYPE_L4 = 5;
    /** Paravirtual: a frame some L1 entry maps writable (Xen's {@code PGT_writable_page}). */
    public static final int TYPE_WRITABLE = 6;
    /**
     * Shared copy-on-write between guest frames (of one or several VMs) with equal contents: owner 0
     * (the host), refs = the guest frames mapping it, read-only everywhere.
     */
    public static final int TYPE_SHARED = 7;

    static {
        BitFields.requireDisjoint("frame descriptor", "used", USED, "free", FREE, "type", TYPE_MASK,
            "owner", OWNER_MASK, "refs", REFS_MASK, "reserved", RESERVED_MASK);
        if ((USED | FREE | TYPE_MASK | OWNER_MASK | REFS_MASK | RESERVED_MASK) != -1L) {
            throw new IllegalStateException("frame descriptor: fields do not cover the word");
        }
    }

    private FrameDescriptor() {
    }

    /**
     * The descriptor of a handed-out frame: {@link #USED}, not free, of {@code type}, owned by VM
     * {@code owner} (0: the host), with {@code refs} references.
     */
    public static long inUse(int type, int owner, int refs) {
        return USED | ((long) type << TYPE_SHIFT) | ((long) owner << OWNER_SHIFT) | ((long) refs << REFS_SHIFT);
    }

    /** {@code descriptor} with its type and reference count replaced (flags and owner kept). */
    public static long withTypeAndRefs(long descriptor, int type, int refs) {
        return (descriptor & ~(TYPE_MASK | REFS_MASK)) | ((long) type << TYPE_SHIFT) | ((long) refs << REFS_SHIFT);
    }

    public static int owner(long descriptor) {
        return (int) ((descriptor & OWNER_MASK) >>> OWNER_SHIFT);
    }

    public static int type(long descriptor) {
        return (int) ((descriptor & TYPE_MASK) >>> TYPE_SHIFT);
    }

    public static int refs(long descriptor) {
        return (int) ((descriptor & REFS_MASK) >>> REFS_SHIFT);
    }

    public static boolean isFree(long descriptor) {
        return (descriptor & FREE) != 0;
    }

    public static boolean isUsed(long descriptor) {
        return (descriptor & USED) != 0;
    }

    /** Whether {@code type} is one of the paravirtual page types (L1..L4 table, writable page). */
    public static boolean isParavirtualType(int type) {
        return type >= TYPE_L1 && type <= TYPE_WRITABLE;
    }

    /** The paravirtual table level (1..4) of {@code type}, 0 when it is not a page-table type. */
    public static int tableLevel(int type) {
        return type >= TYPE_L1 && type <= TYPE_L4 ? type - TYPE_L1 + 1 : 0;
    }

    /** The paravirtual page-table type of level {@code level} (1..4). */
    public static int tableType(int level) {
        return TYPE_L1 + level - 1;
    }

    public static String typeName(int type) {
        switch (type) {
            case TYPE_DATA: return "data";
            case TYPE_HOST_TABLE: return "host table";
            case TYPE_L1: return "L1 table";
            case TYPE_L2: return "L2 table";
            case TYPE_L3: return "L3 table";
            case TYPE_L4: return "L4 table";
            case TYPE_WRITABLE: return "writable page";
            case TYPE_SHARED: return "shared page";
            default: return "type " + type;
        }
    }
}
