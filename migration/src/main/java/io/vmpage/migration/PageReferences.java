package io.vmpage.migration;

import io.vmpage.engine.Vm;

/**
 * A destination's PAGE records by reference, copied out of the source VM its transport offers in batches
 * of consecutive records ({@link Vm#copyFramesFrom}: a batch pays the host accesses and the frame
 * allocation once). Whoever reads the records {@link #flush}es before any other record and before the
 * stream ends, so that pages land in stream order with the rest. One destination thread.
 */
final class PageReferences {
    private final Vm vm;
    private final Transport transport;
    private final long[] gfns = new long[256];
    private int count;
    private Vm source;

    PageReferences(Vm vm, Transport transport) {
        this.vm = vm;
        this.transport = transport;
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

    /** Copies every page added so far. */
    void flush() {
        if (count > 0) {
            int n = count;
            count = 0;
            vm.copyFramesFrom(source, gfns, n);
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
