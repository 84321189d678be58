package io.vmpage.migration;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.VcpuState;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.VmState;
import io.vmpage.mmu.MmuConfig;
import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.CRC32C;

/**
 * The destination of a migration: builds a VM on its host from one stream and hands it over paused,
 * with its memory and vCPU state in place, for the caller to resume (the switch-over). A stream that
 * is truncated, corrupted (its CRC does not match), of another version, or that does not fit the VM
 * it describes is rejected with a {@link MigrationException}, and the partial VM is destroyed: a
 * destination never resumes a VM built from a bad stream.
 */
public final class Destination {
    private Destination() {
    }

    /** What a destination received (pages: PAGE records, of them zero and XBZRLE deltas); {@code postCopy} null unless the stream switched over to post-copy. */
    public record Received(Vm vm, long pages, long zeroPages, long deltaPages, int rounds, MigrationReport.PostCopy postCopy) {
    }

    /**
     * Reads one stream from {@code transport} into a new VM on {@code host}; the VM comes back paused.
     *
     * @throws MigrationException for a lost connection or a bad stream (the partial VM is gone)
     */
    public static Received receive(Host host, Transport transport) {
        return receive(host, transport, vm -> {
            throw new MigrationException("the stream switches over to post-copy, which this destination does not take");
        });
    }

    /**
     * As {@link #receive(Host, Transport)}, taking post-copy too: at the stream's POSTCOPY record the
     * vCPU state is loaded, a {@link PostCopyFetcher} serves the frames still on the source, and
     * {@code switchOver} is called with the VM (it resumes it); the rest of the stream fills the
     * remote frames while the VM runs. The VM comes back running then.
     */
    public static Received receive(Host host, Transport transport, java.util.function.Consumer<Vm> switchOver) {
        return receive(host, transport, Devices.none(), switchOver);
    }

    /**
     * As {@link #receive(Host, Transport, java.util.function.Consumer)}, loading the device states the
     * stream carries with {@code devices}' loaders, once the VM's memory and vCPU state are in place and
     * before it runs here (before {@code switchOver} in post-copy).
     */
    public static Received receive(Host host, Transport transport, Devices devices, java.util.function.Consumer<Vm> switchOver) {
        Vm vm = null;
        Multifd.Receiver multifd = null; // the channels, while they run
        long pages = 0;
        long zero = 0;
        long deltas = 0;
        int rounds = 0;
        long[] remote = null; // post-copy: frames still on the source
        long[] delivered = null;
        long remoteCount = 0;
        long pushed = 0;
        PostCopyFetcher fetcher = null; // set at the switch-over
        PageReferences references = null;
        boolean switched = false; // the VM runs here: from now on a failure pauses the post-copy, it never discards the VM
        long channelPages = 0;
        long channelZero = 0;
        try {
            ByteBuffer chunk = next(transport, "the stream header");
            CRC32C crc = new CRC32C();
            VmConfig config = header(chunk);
            if (config.memoryBytes() > host.memory().size()) {
                throw new MigrationException("stream describes a VM of " + config.memoryBytes() + " bytes; this host has "
                    + host.memory().size());
            }
            vm = host.createVm(config);
            vm.pause(); // no vCPU runs before its state is in place
            byte[] page = new byte[StreamFormat.PAGE_BYTES];
            // The main stream's large batches of pages by reference are shared with the source's thread where
            // there are two cores (a multifd channel copies its own on its own thread, beside the others)
            references = new PageReferences(vm, transport, Runtime.getRuntime().availableProcessors() > 1);
            long frames = vm.physicalMap().frames();
            VmState state = null;
            List<io.vmpage.engine.PvTable> pvTables = new ArrayList<>();
            DeviceAssembly deviceStates = new DeviceAssembly(devices);
            while (true) {
                if (!chunk.hasRemaining()) {
                    crc.update(chunk.flip());
                    transport.release(chunk);
                    chunk = next(transport, "an END record");
                    continue;
                }
                int at = chunk.position();
                byte type = chunk.get();
                if (type != StreamFormat.PAGE) {
                    references.flush(); // every page before lands before any other record counts
                }
                if (multifd != null && type != StreamFormat.ROUND) { // past the rounds: every channel's pages first
                    multifd.awaitEnd();
                    channelPages = multifd.pages();
                    channelZero = multifd.zeroPages();
                    multifd = null;
                }
                switch (type) {
                    case StreamFormat.PAGE: {
                        byte flags = chunk.get();
                        long gfn = chunk.getLong();
                        if (gfn < 0 || gfn >= frames) {
                            throw new MigrationException("stream is corrupted: it sends guest frame " + gfn + ", outside the VM's "
                                + frames + " frames");
                        }
                        if (fetcher != null) { // post-copy: fill a remote frame, exactly once
                            if (postCopyPage(vm, fetcher, remote, delivered, chunk, flags, gfn, page)) {
                                zero++;
                            }
                            pages++;
                            pushed++;
                            break;
                        }
                        if (flags == StreamFormat.PAGE_DELTA) { // XBZRLE: changes the copy this VM holds
                            references.flush();
                            int length = chunk.getShort() & 0xffff;
                            vm.readPhysical(gfn << 12, page, 0, page.length);
                            try {
                                Xbzrle.decode(chunk, length, page);
                            } catch (IllegalArgumentException e) {
                                throw new MigrationException("stream is corrupted: the XBZRLE delta of guest frame " + gfn + " has "
                                    + e.getMessage(), e);
                            }
                            vm.writePhysical(gfn << 12, page, 0, page.length);
                            deltas++;
                        } else if (flags == StreamFormat.PAGE_FULL || flags == StreamFormat.PAGE_ZERO
                            || flags == StreamFormat.PAGE_REFERENCE) {
                            if (storePage(vm, chunk, flags, gfn, page, references)) {
                                zero++;
                            }
                        } else {
                            throw new MigrationException("stream is corrupted: page record of guest frame " + gfn + " has unknown flags " + flags);
                        }
                        pages++;
                        break;
                    }
                    case StreamFormat.MULTIFD: {
                        int channels = chunk.getShort();
                        long session = chunk.getLong();
                        if (pages != 0 || rounds != 0 || state != null || channelPages != 0) {
                            throw new MigrationException("stream is corrupted: a MULTIFD record after the stream began");
                        }
                        if (channels < 2 || channels > MigrationConfig.MAX_CHANNELS) {
                            throw new MigrationException("stream asks for " + channels + " multifd channels (2 to "
                                + MigrationConfig.MAX_CHANNELS + ")");
                        }
                        multifd = new Multifd.Receiver(vm, transport, channels, session, 10_000);
                        break;
                    }
                    case StreamFormat.ROUND:
                        rounds = Math.max(rounds, chunk.getInt() + 1);
                        break;
                    case StreamFormat.STATE:
                        state = state(chunk, config);
                        break;
                    case StreamFormat.PVTABLE: {
                        if (state == null || config.paging() != PagingMode.PARAVIRTUAL) {
                            throw new MigrationException("stream is corrupted: a paravirtual page table "
                                + (state == null ? "before the vCPU state" : "for a " + config.paging() + " VM"));
                        }
                        long gfn = chunk.getLong();
                        int level = chunk.get();
                        boolean pinned = chunk.get() != 0;
                        long[] entries = new long[io.vmpage.engine.PvTable.ENTRIES];
                        for (int i = 0; i < entries.length; i++) {
                            entries[i] = chunk.getLong();
                        }
                        if (gfn < 0 || gfn >= frames || level < 1 || level > 4) {
                            throw new MigrationException("stream is corrupted: a paravirtual L" + level + " table in guest frame " + gfn);
                        }
                        pvTables.add(new io.vmpage.engine.PvTable(gfn, level, pinned, entries));
                        break;
                    }
                    case StreamFormat.DEVICE:
                        if (state == null) {
                            throw new MigrationException("stream is corrupted: device state before the vCPU state");
                        }
                        deviceStates.piece(chunk);
                        break;
                    case StreamFormat.REMOTE: {
                        if (remote == null) {
                            remote = new long[(int) ((frames + 63) >>> 6)];
                            delivered = new long[remote.length];
                        }
                        int first = chunk.getInt();
                        int words = chunk.getInt();
                        if (first < 0 || words < 0 || (long) first + words > remote.length) {
                            throw new MigrationException("stream is corrupted: remote frame bitmap words " + first + ".." + (first + words)
                                + " outside the VM's " + remote.length);
                        }
                        for (int i = 0; i < words; i++) {
                            long bits = chunk.getLong();
                            remote[first + i] = bits;
                            for (long b = bits; b != 0; b &= b - 1) {
                                long gfn = ((long) (first + i) << 6) + Long.numberOfTrailingZeros(b);
                                if (gfn >= frames) {
                                    throw new MigrationException("stream is corrupted: remote guest frame " + gfn + " outside the VM");
                                }
                                vm.markRemote(gfn);
                                remoteCount++;
                            }
                        }
                        break;
                    }
                    case StreamFormat.POSTCOPY:
                        if (state == null) {
                            throw new MigrationException("stream switches over to post-copy before sending the vCPU state");
                        }
                        if (remote == null) {
                            remote = new long[(int) ((frames + 63) >>> 6)];
                            delivered = new long[remote.length];
                        }
                        vm.importState(state);
                        fetcher = new PostCopyFetcher(vm, transport, 10_000);
                        vm.setFrameFetcher(fetcher);
                        devices.loadAll(vm, deviceStates.complete());
                        switchOver.accept(vm);
                        switched = true;
                        break;
                    case StreamFormat.END: {
                        long sent = endRecord(chunk, at, crc, "stream");
                        if (sent != pages) {
                            throw new MigrationException("stream ended after " + pages + " page records; the source sent " + sent);
                        }
                        if (state == null) {
                            throw new MigrationException("stream ended without the vCPU state");
                        }
                        if (fetcher != null && pushed != remoteCount) {
                            throw new MigrationException("stream ended with " + (remoteCount - pushed) + " post-copy pages never sent");
                        }
                        transport.release(chunk);
                        if (transport.receive() != null) {
                            throw new MigrationException("stream continues after its END record");
                        }
                        if (fetcher == null) {
                            vm.importState(new VmState(config, state.vcpus(), pvTables)); // a bad table is refused here
                            devices.loadAll(vm, deviceStates.complete());
                            return new Received(vm, pages + channelPages, zero + channelZero, deltas, rounds, null);
                        }
                        vm.setFrameFetcher(null); // every frame is here
                        return new Received(vm, pages + channelPages, zero + channelZero, deltas, rounds, new MigrationReport.PostCopy(fetcher.faults(),
                            fetcher.latencyMicros(50), fetcher.latencyMicros(99), fetcher.maxLatencyMicros(), pushed));
                    }
                    default:
                        throw new MigrationException("stream is corrupted: record type " + type + " at chunk offset " + at);
                }
            }
        } catch (RuntimeException thrown) {
            RuntimeException e = thrown instanceof BufferUnderflowException
                ? new MigrationException("stream is corrupted or truncated: a record is cut short", thrown) : thrown;
            if (switched) { // the VM runs here, the rest is on the source
                fetcher.pause();
                throw new PostCopyPausedException("post-copy paused on the destination (" + (remoteCount - pushed)
                    + " frames still on the source): " + e.getMessage(), e,
                    new Paused(vm, fetcher, remote, delivered, remoteCount, pushed, pages + channelPages,
                        zero + channelZero, deltas, rounds));
            }
            abort(multifd, "the destination rejected the stream: " + e.getMessage());
            if (references != null) {
                references.close(); // no batch is shared any more (every flush waited for its pieces)
            }
            destroy(host, vm);
            if (e instanceof MigrationException) {
                throw e;
            }
            throw new MigrationException("stream rejected: " + e.getMessage(), e);
        } finally {
            if (references != null) {
                references.close();
            }
        }
    }

    /** Device states as their DEVICE records arrive, piece by piece, in the stream's order. */
    private static final class DeviceAssembly {
        private final Devices devices;
        private final java.util.Map<String, byte[]> states = new java.util.LinkedHashMap<>();
        private final java.util.Map<String, Integer> filled = new java.util.HashMap<>();

        DeviceAssembly(Devices devices) {
            this.devices = devices;
        }

        void piece(ByteBuffer chunk) {
            byte[] nameBytes = new byte[chunk.get() & 0xff];
            chunk.get(nameBytes);
            String name = new String(nameBytes, java.nio.charset.StandardCharsets.UTF_8);
            int total = chunk.getInt();
            int offset = chunk.getInt();
            int part = chunk.getInt();
            byte[] state = states.get(name);
            if (state == null) {
                if (!devices.loads(name)) { // QEMU: "Unknown savevm section"
                    throw new MigrationException("stream carries the state of device '" + name + "', which this destination does not load");
                }
                if (total < 0 || total > Devices.MAX_STATE_BYTES) {
                    throw new MigrationException("stream is corrupted: device '" + name + "' has a state of " + total + " bytes");
                }
                state = new byte[total];
                states.put(name, state);
                filled.put(name, 0);
            }
            int at = filled.get(name);
            if (total != state.length || offset != at || part < 0 || part > total - at || part > chunk.remaining()) {
                throw new MigrationException("stream is corrupted: a piece of device '" + name + "' at " + offset + " (" + part
                    + " of " + total + " bytes) where " + at + " of " + state.length + " were in");
            }
            chunk.get(state, offset, part);
            filled.put(name, at + part);
        }

        /** Every device state, whole; a device cut short is an error. */
        java.util.Map<String, byte[]> complete() {
            for (java.util.Map.Entry<String, byte[]> e : states.entrySet()) {
                if (filled.get(e.getKey()) != e.getValue().length) {
                    throw new MigrationException("stream is corrupted: device '" + e.getKey() + "' has " + filled.get(e.getKey())
                        + " of its " + e.getValue().length + " state bytes");
                }
            }
            return states;
        }
    }

    /**
     * The END record at chunk offset {@code at} of {@code stream} (its type byte read): checks its CRC32C
     * against {@code crc}, which has every chunk before this one, and returns the page count it carries.
     */
    static long endRecord(ByteBuffer chunk, int at, CRC32C crc, String stream) {
        ByteBuffer covered = chunk.duplicate();
        covered.position(0).limit(at);
        crc.update(covered);
        long sent = chunk.getLong();
        int expected = chunk.getInt();
        if (expected != (int) crc.getValue()) {
            throw new MigrationException(stream + " is corrupted: CRC32C 0x" + Integer.toHexString((int) crc.getValue())
                + " where the source computed 0x" + Integer.toHexString(expected));
        }
        return sent;
    }

    /**
     * A post-copy PAGE record into remote guest frame {@code gfn}, which must be one the source still
     * held and not delivered yet (each crosses once): installed, or handed to the vCPU that touched it
     * meanwhile. Returns whether it was ZERO.
     */
    private static boolean postCopyPage(Vm vm, PostCopyFetcher fetcher, long[] remote, long[] delivered, ByteBuffer chunk,
                                        byte flags, long gfn, byte[] page) {
        int w = (int) (gfn >>> 6);
        long bit = 1L << gfn;
        if ((remote[w] & bit) == 0 || (delivered[w] & bit) != 0) {
            throw new MigrationException("stream is corrupted: post-copy page " + gfn + " is not one the source"
                + " still held, or came twice");
        }
        boolean zero = flags == StreamFormat.PAGE_ZERO;
        if (flags == StreamFormat.PAGE_FULL) {
            chunk.get(page);
        } else if (!zero) {
            throw new MigrationException("stream is corrupted: post-copy page " + gfn + " has flags " + flags
                + " (a post-copy page goes whole or as zero, never as a delta or by reference)");
        } else {
            java.util.Arrays.fill(page, (byte) 0);
        }
        delivered[w] |= bit;
        if (!vm.receiveFrame(gfn, page, 0)) {
            fetcher.deliver(gfn, page); // a touch claimed it: it waits for these bytes
        }
        return zero;
    }

    /**
     * A post-copy destination whose connection was lost after the switch-over (QEMU's postcopy-paused):
     * its VM runs on the frames it has, a vCPU touching one still on the source waits, and nothing is
     * discarded. {@link #recover} goes on over a new connection.
     */
    public static final class Paused {
        private final Vm vm;
        private final PostCopyFetcher fetcher;
        private final long[] remote;
        private final long[] delivered;
        private final long remoteCount;
        private long pushed;
        private long pages;
        private long zeroPages;
        private final long deltas;
        private final int rounds;

        Paused(Vm vm, PostCopyFetcher fetcher, long[] remote, long[] delivered, long remoteCount,
               long pushed, long pages, long zeroPages, long deltas, int rounds) {
            this.vm = vm;
            this.fetcher = fetcher;
            this.remote = remote;
            this.delivered = delivered;
            this.remoteCount = remoteCount;
            this.pushed = pushed;
            this.pages = pages;
            this.zeroPages = zeroPages;
            this.deltas = deltas;
            this.rounds = rounds;
        }

        /** The VM, running on this host. */
        public Vm vm() {
            return vm;
        }

        /** Frames still on the source. */
        public long framesLeft() {
            return remoteCount - pushed;
        }
    }

    /**
     * QEMU's postcopy recovery, destination side: over {@code fresh}, a new connection from the source,
     * replies with the bitmap of the remote frames it holds (QEMU's {@code MIG_RP_MSG_RECV_BITMAP}), asks
     * again for the frames its vCPUs wait for, and takes the rest: a stream of RECOVER, the PAGE records
     * of every remote frame it lacked, each once, and END (page count and CRC32C of this stream).
     *
     * @throws PostCopyPausedException when this connection is lost too (recover again with another)
     */
    public static Received recover(Paused p, Transport fresh) {
        Vm vm = p.vm;
        try {
            long[] have = new long[1 + p.delivered.length];
            have[0] = vm.physicalMap().frames();
            System.arraycopy(p.delivered, 0, have, 1, p.delivered.length);
            fresh.reply(have);
            p.fetcher.reconnect(fresh);
            ByteBuffer chunk = next(fresh, "the RECOVER record");
            if (chunk.get() != StreamFormat.RECOVER) {
                throw new MigrationException("a post-copy recovery stream does not start with RECOVER");
            }
            CRC32C crc = new CRC32C();
            byte[] page = new byte[StreamFormat.PAGE_BYTES];
            long frames = vm.physicalMap().frames();
            long received = 0;
            while (true) {
                if (!chunk.hasRemaining()) {
                    crc.update(chunk.flip());
                    fresh.release(chunk);
                    chunk = next(fresh, "the recovery's END record");
                    continue;
                }
                int at = chunk.position();
                byte type = chunk.get();
                if (type == StreamFormat.PAGE) {
                    byte flags = chunk.get();
                    long gfn = chunk.getLong();
                    if (gfn < 0 || gfn >= frames) {
                        throw new MigrationException("stream is corrupted: it sends guest frame " + gfn + ", outside the VM");
                    }
                    if (postCopyPage(vm, p.fetcher, p.remote, p.delivered, chunk, flags, gfn, page)) {
                        p.zeroPages++;
                    }
                    p.pages++;
                    p.pushed++;
                    received++;
                } else if (type == StreamFormat.END) {
                    long sent = endRecord(chunk, at, crc, "the recovery stream");
                    if (sent != received || p.pushed != p.remoteCount) {
                        throw new MigrationException("the recovery ended with " + (p.remoteCount - p.pushed) + " post-copy pages never sent");
                    }
                    fresh.release(chunk);
                    if (fresh.receive() != null) {
                        throw new MigrationException("the recovery stream continues after its END record");
                    }
                    vm.setFrameFetcher(null); // every frame is here
                    return new Received(vm, p.pages, p.zeroPages, p.deltas, p.rounds, new MigrationReport.PostCopy(p.fetcher.faults(),
                        p.fetcher.latencyMicros(50), p.fetcher.latencyMicros(99), p.fetcher.maxLatencyMicros(), p.pushed));
                } else {
                    throw new MigrationException("the recovery stream is corrupted: record type " + type + " at chunk offset " + at);
                }
            }
        } catch (RuntimeException e) {
            p.fetcher.pause();
            throw new PostCopyPausedException("post-copy recovery failed (" + p.framesLeft() + " frames still on the source): "
                + e.getMessage(), e, p);
        }
    }

    /**
     * A whole, zero or by-reference page record into guest frame {@code gfn}: FULL straight from the chunk,
     * REFERENCE out of the source VM, batched in {@code references}, ZERO as zeros where the frame
     * holds contents sent before (a frame never populated reads as zeros already). Returns whether it was
     * ZERO. Any destination thread (multifd channels too).
     */
    static boolean storePage(Vm vm, ByteBuffer chunk, byte flags, long gfn, byte[] page, PageReferences references) {
        if (flags == StreamFormat.PAGE_FULL) {
            vm.writePhysical(gfn << 12, chunk, StreamFormat.PAGE_BYTES); // straight from the chunk
            return false;
        }
        if (flags == StreamFormat.PAGE_REFERENCE) { // one copy, out of the source VM the transport offers
            references.add(gfn);
            return false;
        }
        references.flush(); // the pages before this one land first
        if (vm.physicalMap().machineFrame(gfn) >= 0) {
            java.util.Arrays.fill(page, (byte) 0);
            vm.writePhysical(gfn << 12, page, 0, page.length);
        }
        return true;
    }

    /** Stops the multifd channels' threads, if they still run, before the partial VM goes. */
    private static void abort(Multifd.Receiver multifd, String why) {
        if (multifd != null) {
            multifd.abort(why);
        }
    }

    private static void destroy(Host host, Vm vm) {
        if (vm != null && host.vms().contains(vm)) {
            host.destroyVm(vm);
        }
    }

    private static ByteBuffer next(Transport transport, String expecting) {
        ByteBuffer b = transport.receive();
        if (b == null) {
            throw new MigrationException("stream is truncated: it ended before " + expecting);
        }
        return b;
    }

    private static VmConfig header(ByteBuffer b) {
        if (b.remaining() < 8) {
            throw new MigrationException("stream is truncated: " + b.remaining() + " bytes, not a header");
        }
        int magic = b.getInt();
        if (magic != StreamFormat.MAGIC) {
            throw new MigrationException("not a vmpage migration stream (magic 0x" + Integer.toHexString(magic) + ")");
        }
        short version = b.getShort();
        if (version != StreamFormat.VERSION) {
            throw new MigrationException("stream version " + version + " is not supported (this reads version "
                + StreamFormat.VERSION + ")");
        }
        b.getShort();
        long memory = b.getLong();
        int vcpus = b.getInt();
        PagingMode paging = StreamFormat.paging(b.get());
        int levels = b.get();
        MmuConfig mmu = MmuConfig.defaults().withTlbGeometry(b.getInt(), b.getInt(), b.getInt(), b.getInt())
            .withTlb(b.get() != 0).withPagingStructureCache(b.getInt()).withNestedCache(b.getInt()).withMaxPhysAddrBits(b.get());
        return new VmConfig(memory, vcpus, paging, levels, mmu);
    }

    private static VmState state(ByteBuffer b, VmConfig config) {
        int n = b.getInt();
        if (n != config.vcpus()) {
            throw new MigrationException("stream carries " + n + " vCPU states for a VM of " + config.vcpus() + " vCPUs");
        }
        List<VcpuState> vcpus = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            long cr0 = b.getLong();
            long cr3 = b.getLong();
            long cr4 = b.getLong();
            long efer = b.getLong();
            byte flags = b.get();
            vcpus.add(new VcpuState(cr0, cr3, (flags & 1) != 0, cr4, efer, (flags & 2) != 0));
        }
        return new VmState(config, vcpus);
    }
}
