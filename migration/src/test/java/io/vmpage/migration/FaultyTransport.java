package io.vmpage.migration;

import java.nio.ByteBuffer;
import java.util.function.IntPredicate;

/** A transport that breaks, or tampers with a chunk, at the {@code n}-th send (a memory transport unless given one). */
class FaultyTransport implements Transport {
    private final Transport inner;
    private final IntPredicate breakAt;
    private final boolean corrupt;
    private final boolean dropEnd;
    private int sends;
    /** With {@code dropEnd}: the chunk held back, so the last one (with the END record) never goes. */
    private ByteBuffer held;
    /** Whether the source VM's memory is offered through to the inner transport (pages by reference). */
    private boolean offering;

    FaultyTransport(IntPredicate breakAt, boolean corrupt, boolean dropEnd) {
        this(new MemoryTransport(16, MemoryTransport.DEFAULT_CHUNK, 5_000), breakAt, corrupt, dropEnd);
    }

    FaultyTransport(Transport inner, IntPredicate breakAt, boolean corrupt, boolean dropEnd) {
        this.inner = inner;
        this.breakAt = breakAt;
        this.corrupt = corrupt;
        this.dropEnd = dropEnd;
    }

    /** Passes {@link #offerMemory} on to the inner transport, so that pages go by reference where it can. */
    FaultyTransport offeringMemory() {
        offering = true;
        return this;
    }

    @Override
    public boolean offerMemory(io.vmpage.engine.Vm vm) {
        return offering && inner.offerMemory(vm);
    }

    @Override
    public io.vmpage.engine.Vm offeredMemory() {
        return offering ? inner.offeredMemory() : null;
    }

    /** Passed on with the offered memory: the source's thread copies pieces of the destination's batches. */
    @Override
    public boolean shareCopy(SharedCopy copy) {
        return offering && inner.shareCopy(copy);
    }

    @Override
    public SharedCopy sharedCopy() {
        return offering ? inner.sharedCopy() : null;
    }

    @Override
    public ByteBuffer acquire() {
        return inner.acquire();
    }

    @Override
    public void send(ByteBuffer filled) {
        if (breakAt.test(++sends)) {
            if (corrupt) {
                filled.put(filled.limit() / 2, (byte) (filled.get(filled.limit() / 2) ^ 0x5A)); // one bit pattern flipped
            } else {
                inner.fail("link dropped at chunk " + sends);
            }
        }
        if (dropEnd) {
            if (held != null) {
                inner.send(held);
            }
            held = filled;
            return;
        }
        inner.send(filled);
    }

    @Override
    public void finish() {
        inner.finish(); // with dropEnd the held chunk, the one with the END record, is never sent
    }

    @Override
    public ByteBuffer receive() {
        return inner.receive();
    }

    @Override
    public void release(ByteBuffer buffer) {
        inner.release(buffer);
    }

    @Override
    public void request(long gfn) {
        inner.request(gfn);
    }

    @Override
    public long pollRequest() {
        return inner.pollRequest();
    }

    @Override
    public void fail(String why) {
        inner.fail(why);
    }

    @Override
    public void close() {
        inner.close();
    }
}
