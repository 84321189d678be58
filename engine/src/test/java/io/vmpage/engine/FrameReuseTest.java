package io.vmpage.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * A frame that leaves a VM (here by {@link Vm#discardFrame}) goes back to the host only once no store
 * to it can still land: writers of VM a store without pause into a page that the main thread discards
 * again and again, and each time VM b takes a fresh frame (the host hands out the frame freed last
 * first) and fills it. No byte of a's stores may ever show up in b. Both ways of driving a vCPU; more
 * threads than cores, so that a writer is preempted inside an access now and then. Bounded: 2 s or
 * 5,000 discards.
 */
class FrameReuseTest {
    @ParameterizedTest
    @EnumSource(Driving.class)
    @Timeout(60)
    void aDiscardedFrameIsReusedOnlyAfterEveryStoreToItHasLanded(Driving driving) throws Exception {
        try (Host host = Host.create(96L << 20);
             LoggedGuest a = new LoggedGuest(host, PagingMode.NESTED, 2, 4)) {
            Vm b = host.createVm(VmConfig.of(24L << 20).withPaging(PagingMode.NESTED));
            long pattern = 0x0B0B_0B0B_0B0B_0B0BL;
            byte[] page = new byte[4096];
            java.util.Arrays.fill(page, (byte) 0x0B);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(2);
            int discards = 0;
            long[] filled = {0};
            try (VcpuWriters writers = VcpuWriters.start(a.vm, 2, driving, (cpu, n) -> cpu.writeLong(LoggedGuest.page(2) + 8 * (n & 511), -1))) {
                for (long gfnB = 0; gfnB < 5_000 && System.nanoTime() < deadline; gfnB++) {
                    if (a.vm.discardFrame(a.gfnOfPage[2])) {
                        discards++;
                    }
                    b.writePhysical(gfnB << 12, page, 0, page.length); // likely the frame a just gave back
                    filled[0] = gfnB + 1;
                    for (int word = 0; word < 512; word++) {
                        long seen = b.readPhysicalLong((gfnB << 12) + 8L * word);
                        assertEquals(pattern, seen, "a store of VM a landed in VM b's guest frame " + gfnB + " after a discard");
                    }
                }
            }
            assertTrue(discards > 100, "discards: " + discards);
            for (long gfnB = 0; gfnB < filled[0]; gfnB++) { // a late stale store shows here at the latest
                for (int word = 0; word < 512; word++) {
                    assertEquals(pattern, b.readPhysicalLong((gfnB << 12) + 8L * word),
                        "a store of VM a landed in VM b's guest frame " + gfnB + " after a discard");
                }
            }
        }
    }
}
