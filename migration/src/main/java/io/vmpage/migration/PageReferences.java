package io.vmpage.migration;

import io.vmpage.engine.Vm;

/**
 * A destination's PAGE records by reference, copied out of the source VM its transport offers in batches
 * of consecutive records ({@link Vm#copyFramesFrom}: a batch pays the host accesses and the frame
 * allocation once). Whoever reads the records {@link #flush}es before any other record and before the
 * stream ends, so that pages land in stream order with the rest. A large batch is a {@link SharedCopy}
 * offered on the transport, so that the source's thread, in process, copies pieces of it while it waits.
 */
final class PageReferences implements AutoCloseable {
    /** Batches at least this large are shared (smaller ones cost more to share than to copy). */
    private static final int SPLIT = 512;

    private final Vm vm;
    private final Transport transport;
    private final long[] gfns = new long[2048];
    private int count;
    private Vm source;
    /** Whether large batches may be shared. */
    private final boolean shareable;
    /** The shared copy, made with the first batch large enough and offered on the transport; null before. */
    private SharedCopy shared;

    /** Copies on the calling thread alone. */
    PageReferences(Vm vm, Transport transport) {
        this(vm, transport, false);
    }

    /** With {@code shareable}, large batches are offered to another thread ({@link Transport#shareCopy}). */
    PageReferences(Vm vm, Transport transport, boolean shareable) {
        this.vm = vm;
        this.transport = transport;
        this.shareable = shareable;
    }

    /** Guest frame {@code gfn} is to be copied out of the source. */
    void add(long gfn) {
        if (source == null) {
            source = offeredSource();
        }
        gfns[count++] = gfn;
        if (count == gfns.length) {
            flush();
        }
    }

    /** Copies every page added so far; on return they are all in place. */
    void flush() {
        int n = count;
        if (n == 0) {
            return;
        }
        count = 0;
        if (shareable && n >= SPLIT && shared == null) {
            SharedCopy offered = new SharedCopy(vm, source);
            if (transport.shareCopy(offered)) {
                shared = offered;
            }
        }
        if (shared == null || n < SPLIT) {
            vm.copyFramesFrom(source, gfns, n);
        } else {
            shared.copy(gfns, n);
        }
    }

    /** Withdraws the shared copy from the transport, if one was offered (pages added and not flushed are dropped). */
    @Override
    public void close() {
        if (shared != null) {
            transport.shareCopy(null);
            shared = null;
        }
    }

    private Vm offeredSource() {
        Vm s = transport.offeredMemory();
        if (s == null) {
            throw new MigrationException("stream is corrupted: a page is sent by reference over a transport that offers"
                + " no source memory");
        }
        if (s.physicalMap().frames() != vm.physicalMap().frames()) {
            throw new MigrationException("stream is corrupted: pages by reference from a VM of " + s.physicalMap().frames()
                + " frames into one of " + vm.physicalMap().frames());
        }
        return s;
    }
}
