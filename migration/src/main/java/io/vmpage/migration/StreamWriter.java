package io.vmpage.migration;

import io.vmpage.engine.VcpuState;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.VmState;
import io.vmpage.mmu.MmuConfig;
import java.nio.ByteBuffer;
import java.util.zip.CRC32C;

/** Writes a {@link StreamFormat} stream into a {@link Transport}, chunk by chunk. Source thread only. */
final class StreamWriter {
    private final Transport transport;
    private final CRC32C crc = new CRC32C();
    private ByteBuffer chunk;
    private long pages;
    private long zeroPages;
    private long bytes;
    /** Payload bytes of the pages sent as REFERENCE: what they move, though not through the stream. */
    private long referenced;
    /** The VM whose pages go as REFERENCE records (its memory offered by the transport), null: every page in the stream. */
    private io.vmpage.engine.Vm references;
    /**
     * REFERENCE records in the chunk now: the chunk goes after this many (8 MiB of pages to copy), not when
     * full (25,000 of them), so that the destination copies alongside the source's scan, not after it.
     */
    private int referencesInChunk;
    private static final int REFERENCES_PER_CHUNK = 2048;

    StreamWriter(Transport transport) {
        this.transport = transport;
        this.chunk = transport.acquire();
    }

    /**
     * From now on {@code vm}'s pages go as REFERENCE records when the transport offers its memory to the
     * destination ({@link Transport#offeredMemory}); null: every page in the stream again.
     */
    void references(io.vmpage.engine.Vm vm) {
        references = vm != null && transport.offeredMemory() == vm ? vm : null;
    }

    void header(VmConfig config) {
        room(64);
        chunk.putInt(StreamFormat.MAGIC).putShort(StreamFormat.VERSION).putShort((short) 0);
        chunk.putLong(config.memoryBytes()).putInt(config.vcpus()).put((byte) config.paging().ordinal()).put((byte) config.levels());
        MmuConfig m = config.mmu();
        chunk.putInt(m.tlbSets()).putInt(m.tlbWays()).putInt(m.largeTlbSets()).putInt(m.largeTlbWays())
            .put((byte) (m.tlbEnabled() ? 1 : 0)).putInt(m.pscEntries()).putInt(m.nestedEntries()).put((byte) m.maxPhysAddrBits());
        if (references != null) { // in process the destination builds its VM while this scans the first pages
            flush();
        }
    }

    /** A post-copy recovery stream's first record. */
    void recover() {
        room(1);
        chunk.put(StreamFormat.RECOVER);
    }

    /** The MULTIFD record: pages go over {@code channels} channels of this {@code session}. */
    void multifd(int channels, long session) {
        room(11);
        chunk.put(StreamFormat.MULTIFD).putShort((short) channels).putLong(session);
    }

    /** A channel stream's first record: channel {@code index} of {@code session}. */
    void channel(int index, long session) {
        room(17);
        chunk.put(StreamFormat.CHANNEL).putInt(StreamFormat.MAGIC).putShort(StreamFormat.VERSION).putShort((short) index)
            .putLong(session);
    }

    /** A channel's SYNC record after the pages of rounds up to {@code round - 1}, sent at once. */
    void sync(int round) {
        room(5);
        chunk.put(StreamFormat.SYNC).putInt(round);
        flush();
    }

    /**
     * Guest frame {@code gfn} of {@code vm} as it is now, copied from guest memory straight into the chunk
     * (one copy, no allocation), and sent as ZERO instead when it is all zeros. Returns whether it was.
     */
    boolean page(io.vmpage.engine.Vm vm, long gfn) {
        if (vm == references) { // the destination copies it out of vm: only its number goes
            return reference(gfn, vm.isZeroFrame(gfn));
        }
        room(StreamFormat.MAX_RECORD);
        int at = chunk.position();
        chunk.put(StreamFormat.PAGE).put(StreamFormat.PAGE_FULL).putLong(gfn);
        int payload = chunk.position();
        vm.readPhysical(gfn << 12, chunk, StreamFormat.PAGE_BYTES);
        pages++;
        if (!PageScan.isZero(chunk, payload)) {
            return false;
        }
        chunk.position(at);
        chunk.put(StreamFormat.PAGE).put(StreamFormat.PAGE_ZERO).putLong(gfn);
        zeroPages++;
        return true;
    }

    /** Whether pages of {@code vm} go by reference (its memory is offered to the destination). */
    boolean byReference(io.vmpage.engine.Vm vm) {
        return vm != null && vm == references;
    }

    /**
     * {@link #page(io.vmpage.engine.Vm, long)} for pages {@code gfns[from..from+n)} of {@code vm}, whose
     * pages go by reference: one zero scan per 64 ({@link io.vmpage.engine.Vm#zeroFrames}). Returns how many
     * were not zero.
     */
    int references(io.vmpage.engine.Vm vm, long[] gfns, int from, int n) {
        int full = 0;
        for (int at = from; at < from + n; at += 64) {
            int k = Math.min(64, from + n - at);
            long zero = vm.zeroFrames(gfns, at, k);
            for (int i = 0; i < k; i++) {
                reference(gfns[at + i], (zero & (1L << i)) != 0);
            }
            full += k - Long.bitCount(zero);
        }
        return full;
    }

    /** A page the destination copies out of the offered VM itself: its number only, or ZERO. */
    private boolean reference(long gfn, boolean zero) {
        room(StreamFormat.PAGE_HEADER);
        chunk.put(StreamFormat.PAGE).put(zero ? StreamFormat.PAGE_ZERO : StreamFormat.PAGE_REFERENCE).putLong(gfn);
        pages++;
        if (zero) {
            zeroPages++;
        } else {
            referenced += StreamFormat.PAGE_BYTES;
        }
        if (++referencesInChunk == REFERENCES_PER_CHUNK) { // the destination copies while this goes on
            flush();
        }
        return zero;
    }

    /** A page whose contents are in {@code page} (4096 bytes); sent as ZERO when all zero. */
    void page(long gfn, byte[] page, boolean zero) {
        room(StreamFormat.MAX_RECORD);
        chunk.put(StreamFormat.PAGE);
        if (zero) {
            chunk.put(StreamFormat.PAGE_ZERO).putLong(gfn);
            zeroPages++;
        } else {
            chunk.put(StreamFormat.PAGE_FULL).putLong(gfn).put(page, 0, StreamFormat.PAGE_BYTES);
        }
        pages++;
    }

    /** A page as an XBZRLE delta of {@code length} bytes (less than a page) against its last copy sent. */
    void delta(long gfn, byte[] delta, int length) {
        room(StreamFormat.PAGE_HEADER + 2 + length);
        chunk.put(StreamFormat.PAGE).put(StreamFormat.PAGE_DELTA).putLong(gfn).putShort((short) length).put(delta, 0, length);
        pages++;
    }

    void round(int round) {
        room(5);
        chunk.put(StreamFormat.ROUND).putInt(round);
    }

    void state(VmState state) {
        room(5 + state.vcpus().size() * StreamFormat.VCPU_STATE_BYTES);
        chunk.put(StreamFormat.STATE).putInt(state.vcpus().size());
        for (VcpuState v : state.vcpus()) {
            chunk.putLong(v.cr0()).putLong(v.cr3()).putLong(v.cr4()).putLong(v.efer())
                .put((byte) ((v.cr3Loaded() ? 1 : 0) | (v.userMode() ? 2 : 0)));
        }
        for (io.vmpage.engine.PvTable t : state.pvTables()) {
            room(StreamFormat.PVTABLE_BYTES);
            chunk.put(StreamFormat.PVTABLE).putLong(t.gfn()).put((byte) t.level()).put((byte) (t.pinned() ? 1 : 0));
            for (int i = 0; i < io.vmpage.engine.PvTable.ENTRIES; i++) {
                chunk.putLong(t.entry(i));
            }
        }
    }

    /** DEVICE records carrying every device's saved state, in order, each cut into pieces that fit a chunk. */
    void devices(java.util.Map<String, byte[]> states) {
        for (java.util.Map.Entry<String, byte[]> e : states.entrySet()) {
            byte[] name = e.getKey().getBytes(java.nio.charset.StandardCharsets.UTF_8);
            byte[] state = e.getValue();
            int head = StreamFormat.DEVICE_HEADER + name.length;
            int offset = 0;
            do {
                int part = Math.min(state.length - offset, chunk.capacity() / 2);
                room(head + part);
                chunk.put(StreamFormat.DEVICE).put((byte) name.length).put(name)
                    .putInt(state.length).putInt(offset).putInt(part).put(state, offset, part);
                offset += part;
            } while (offset < state.length);
        }
    }

    /** REMOTE records for the guest frames set in {@code bitmap} (one bit per frame, 64 per word). */
    void remote(long[] bitmap) {
        for (int first = 0; first < bitmap.length; first += StreamFormat.REMOTE_WORDS) {
            int words = Math.min(StreamFormat.REMOTE_WORDS, bitmap.length - first);
            room(9 + words * 8);
            chunk.put(StreamFormat.REMOTE).putInt(first).putInt(words);
            for (int i = 0; i < words; i++) {
                chunk.putLong(bitmap[first + i]);
            }
        }
    }

    /** The POSTCOPY record, sent at once: the destination resumes the VM when it reads it. */
    void postcopy() {
        room(1);
        chunk.put(StreamFormat.POSTCOPY);
        flush();
    }

    /** Sends what the chunk holds now (a page a destination vCPU waits for must not wait for a full chunk). */
    void flush() {
        if (chunk.position() != 0) {
            keepAlive();
        }
    }

    /**
     * Sends the chunk as it is, even empty: the main stream of a multifd migration keeps its
     * destination's read deadline from expiring while the channels carry the pages.
     */
    void keepAlive() {
        referencesInChunk = 0;
        ByteBuffer covered = chunk.duplicate().flip();
        crc.update(covered);
        bytes += chunk.position();
        chunk.flip();
        transport.send(chunk);
        chunk = transport.acquire();
    }

    /** The END record, then the last chunk, then the end of the stream. */
    void end() {
        room(StreamFormat.END_BYTES);
        ByteBuffer covered = chunk.duplicate().flip();
        crc.update(covered);
        chunk.put(StreamFormat.END).putLong(pages).putInt((int) crc.getValue());
        bytes += chunk.position();
        chunk.flip();
        transport.send(chunk);
        chunk = null;
        transport.finish();
    }

    long pages() {
        return pages;
    }

    long zeroPages() {
        return zeroPages;
    }

    /** Stream bytes handed to the transport so far, with the page payload each REFERENCE record moved. */
    long bytes() {
        return bytes + referenced + (chunk == null ? 0 : chunk.position());
    }

    /** Sends the chunk when fewer than {@code need} bytes are left in it (records never span chunks). */
    private void room(int need) {
        if (chunk.remaining() < need) {
            flush();
        }
    }
}
