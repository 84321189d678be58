package io.vmpage.migration;

/**
 * The migration stream, version 4 (version 3 had no REFERENCE pages, version 2 no DEVICE records, version 1 no
 * DELTA pages): what the source writes and the destination checks, all big-endian.
 *
 * <pre>
 *  stream  = HEADER record* END
 *
 *  HEADER  +------------+---------+----------+------------------------------------------------------+
 *          | magic u32  | ver u16 | rsvd u16 | config: memory u64, vcpus u32, paging u8, levels u8,  |
 *          | 'VMPG'     | 4       | 0        | mmu: tlb sets/ways/large sets/large ways 4 x u32,    |
 *          |            |         |          | tlb on u8, psc u32, nested u32, MAXPHYADDR u8        |
 *          +------------+---------+----------+------------------------------------------------------+
 *  PAGE    | type u8 = 1 | flags u8 (ZERO 1, FULL 2, DELTA 3, REFERENCE 4) | gfn u64 | FULL: 4096 bytes |
 *          |             |   DELTA: length u16, then an {@link Xbzrle} delta against the page's last copy |
 *          |             |   REFERENCE: nothing; the destination copies the page out of the source VM   |
 *          |             |   its transport offers ({@link Transport#offerMemory}: in-process only) when  |
 *          |             |   it reads the record, which is no earlier than the source wrote it          |
 *  ROUND   | type u8 = 2 | round u32  (0 = the bulk copy, then one per harvest, STOP_AND_COPY last) |
 *  STATE   | type u8 = 3 | vcpus u32 | per vCPU: cr0 u64, cr3 u64, cr4 u64, efer u64, flags u8       |
 *          |             |           |   (flags: bit 0 CR3 loaded, bit 1 user mode)                  |
 *  END     | type u8 = 4 | pages u64 (PAGE records sent) | crc32c u32 of every byte before this type |
 *  REMOTE  | type u8 = 5 | first word u32 | words u32 | words x u64: bitmap of the guest frames the
 *          |             | source still holds (post-copy: the destination marks them "not here yet")  |
 *  PVTABLE | type u8 = 7 | gfn u64 | level u8 | pinned u8 | 512 x u64 canonical entries: a paravirtual
 *          |             | VM's page table with guest frame numbers in place of machine frames (after STATE)   |
 *  DEVICE  | type u8 = 8 | name length u8 | name (UTF-8) | total u32 | offset u32 | part u32 | part bytes:
 *          |             | one piece of a device's saved state ({@link Devices}); its pieces come in order, after
 *          |             | STATE and PVTABLE and before END or POSTCOPY; the destination loads each device whole
 *  MULTIFD | type u8 = 9 | channels u16 | session u64: pages go over that many channels besides this main
 *          |             | stream (right after HEADER); the main stream then carries no page before STATE
 *  POSTCOPY| type u8 = 6 | the switch-over of post-copy: the destination resumes the VM now; the PAGE |
 *          |             | records after it fill its remote frames, each exactly once                 |
 * </pre>
 * A multifd channel (QEMU's multifd, {@link Multifd}) is a stream of its own on its own connection:
 * <pre>
 *  channel = CHANNEL (PAGE | SYNC)* END
 *  CHANNEL | type u8 = 10 | magic u32 | version u16 | index u16 (1..channels) | session u64 (the main stream's)
 *  SYNC    | type u8 = 11 | round u32: every page of the rounds before is in this channel; no channel's page
 *          |              | after its SYNC lands before every channel reached it (a page re-sent in a later
 *          |              | round may travel on another channel)
 *  END     | as above, over this channel's records; PAGE records here are ZERO, FULL or REFERENCE
 * </pre>
 * A post-copy recovery (QEMU's postcopy recovery, {@link Destination#recover}) is a stream of its own on a new
 * connection, after the destination replied with the bitmap of the remote frames it holds:
 * <pre>
 *  recovery = RECOVER (type u8 = 12) PAGE* END   (the PAGE records of every remote frame it lacked, each once)
 * </pre>
 * Every channel ends before the main stream goes on past its rounds (its STATE, or post-copy's pages).
 * A record never spans two transport chunks. A page may be sent several times (once per round it was
 * dirty); the last copy counts. A ZERO page is all zeros without its bytes on the wire; pages never
 * populated are not sent at all (the destination reads them as zeros too). A DELTA page changes the copy
 * of that page the destination already holds (an earlier record of the same stream). A REFERENCE page is
 * copied later than a FULL one would have been, so it may be newer: still the right copy, since each round
 * is sent after the harvest that found it dirty, and a write after that harvest is in the next one (the
 * stop-and-copy's pages are copied while the source is paused). The END digest covers the records, not
 * the pages a REFERENCE names (those never pass through a buffer).
 */
final class StreamFormat {
    static final int MAGIC = 0x564D_5047; // "VMPG"
    static final short VERSION = 4;

    static final byte PAGE = 1;
    static final byte ROUND = 2;
    static final byte STATE = 3;
    static final byte END = 4;
    static final byte REMOTE = 5;
    static final byte POSTCOPY = 6;
    static final byte PVTABLE = 7;
    static final byte DEVICE = 8;
    static final byte MULTIFD = 9;
    static final byte CHANNEL = 10;
    static final byte SYNC = 11;
    static final byte RECOVER = 12;
    /** Bytes of a DEVICE record before its name and its part. */
    static final int DEVICE_HEADER = 1 + 1 + 3 * 4;
    /** Bytes of a PVTABLE record. */
    static final int PVTABLE_BYTES = 1 + 8 + 1 + 1 + 512 * 8;
    /** Bitmap words per REMOTE record (32 KiB, well inside a chunk). */
    static final int REMOTE_WORDS = 4096;

    static final byte PAGE_ZERO = 1;
    static final byte PAGE_FULL = 2;
    static final byte PAGE_DELTA = 3;
    static final byte PAGE_REFERENCE = 4;

    static final int PAGE_BYTES = 4096;
    /** Bytes of a PAGE record without its payload. */
    static final int PAGE_HEADER = 1 + 1 + 8;
    /** Bytes of the largest record (a full page). */
    static final int MAX_RECORD = PAGE_HEADER + PAGE_BYTES;
    /** Bytes of the END record. */
    static final int END_BYTES = 1 + 8 + 4;
    /** Bytes of one vCPU in a STATE record. */
    static final int VCPU_STATE_BYTES = 4 * 8 + 1;

    private StreamFormat() {
    }

    /** The paging mode a header names by its ordinal. */
    static io.vmpage.engine.PagingMode paging(int ordinal) {
        io.vmpage.engine.PagingMode[] all = io.vmpage.engine.PagingMode.values();
        if (ordinal < 0 || ordinal >= all.length) {
            throw new MigrationException("stream names paging mode " + ordinal + ", which does not exist");
        }
        return all[ordinal];
    }
}
