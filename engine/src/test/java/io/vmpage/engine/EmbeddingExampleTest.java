package io.vmpage.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.dirty.DirtySnapshot;
import io.vmpage.engine.dirty.DirtyTracking;
import io.vmpage.mmu.PageTables;
import io.vmpage.mmu.Pte;
import org.junit.jupiter.api.Test;

/** The embedding example of the README, run as written. */
class EmbeddingExampleTest {
    @Test
    void readmeExample() {
        try (Host host = Host.create(256L << 20)) {
            Vm vm = host.createVm(VmConfig.of(64L << 20).withPaging(PagingMode.NESTED));
            // Page tables a bootloader builds in guest memory (the tables live in guest-physical 60..64 MiB)
            PageTables tables = vm.guestPageTables(60L << 20, 64L << 20);
            tables.map(0x7f00_0000_0000L, 0x10_0000, Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.US);
            Vcpu cpu = vm.vcpu(0);
            cpu.loadCr3(tables.root());
            cpu.writeLong(0x7f00_0000_0008L, 42);        // TLB miss, 2D walk, EPT violations, retry
            long seen = vm.readPhysicalLong(0x10_0008);  // 42: the guest-physical view
            System.out.println(vm.exits());              // {EPT_VIOLATION=5, ...}: 4 tables + 1 data frame

            assertEquals(42, seen);
            assertEquals(5, vm.exits().get(ExitReason.EPT_VIOLATION));
        }
    }

    @Test
    void readmeDirtyLogExample() {
        try (Host host = Host.create(256L << 20)) {
            Vm vm = host.createVm(VmConfig.of(64L << 20).withPaging(PagingMode.NESTED));
            PageTables tables = vm.guestPageTables(60L << 20, 64L << 20);
            tables.map(0x7f00_0000_0000L, 0x10_0000, Pte.SHIFT_4K, Pte.P | Pte.RW | Pte.US);
            Vcpu cpu = vm.vcpu(0);
            cpu.loadCr3(tables.root());
            byte[] copy = new byte[(int) vm.memorySize()];
            java.util.List<Long> sent = new java.util.ArrayList<>();

            DirtyLog log = vm.dirtyLog();
            log.enable(DirtyTracking.WRITE_PROTECT);        // or DIRTY_BITS (nested paging), DIRTY_RING
            DirtySnapshot dirty = new DirtySnapshot(vm.physicalMap().frames());
            cpu.writeLong(0x7f00_0000_0010L, 7);            // first write to the page: exits, is logged
            log.harvest(dirty);                             // take, write-protect again, flush TLBs
            dirty.forEach(gfn -> vm.readPhysical(gfn << 12, copy, (int) (gfn << 12), 4096)); // pre-copy

            dirty.forEach(sent::add);
            assertEquals(true, sent.contains(0x100L), "the data frame is reported: " + sent);
            assertEquals(7, java.nio.ByteBuffer.wrap(copy, 0x10_0010, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong());
        }
    }
}
