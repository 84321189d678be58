package io.vmpage.mmu;

/**
 * Where the entries of a {@link PageTables} live, by table-space address: machine memory directly, or
 * another address space (a guest's physical memory, reached through its hypervisor's accessors).
 * Loads are volatile and stores release stores, so a walker on another thread that reads an entry sees
 * the table it points to initialised.
 */
public interface TableMemory {
    /** The entry at table-space address {@code address} (volatile load). */
    long load(long address);

    /** Stores {@code entry} at table-space address {@code address} (release store). */
    void store(long address, long entry);

    /** Entries in {@code memory}, table-space address {@code a} at host-physical {@code toHost(a)}. */
    static TableMemory of(MachineMemory memory, java.util.function.LongUnaryOperator toHost) {
        return new TableMemory() {
            @Override
            public long load(long address) {
                return memory.getLongVolatile(toHost.applyAsLong(address));
            }

            @Override
            public void store(long address, long entry) {
                memory.putLongRelease(toHost.applyAsLong(address), entry);
            }
        };
    }
}
