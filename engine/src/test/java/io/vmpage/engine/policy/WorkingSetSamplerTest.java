package io.vmpage.engine.policy;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.Driving;
import io.vmpage.engine.Host;
import io.vmpage.engine.LoggedGuest;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.VcpuWriters;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** ESX's statistical working-set sampling on a real guest whose writers touch a known share of its pages. */
class WorkingSetSamplerTest {
    private static final int PAGES = 1024;

    /**
     * One guest touches a quarter of its pages without pause, another touches none: the first's estimate
     * settles near the quarter of its memory that is its hot set (plus the kernel frames every access
     * walks), the idle one's near zero, and the estimate falls slowly when the busy one stops.
     */
    @ParameterizedTest
    @EnumSource(value = PagingMode.class, names = {"NESTED", "SHADOW"})
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void theEstimateFollowsTheShareOfPagesTheGuestTouches(PagingMode mode) throws Exception {
        try (Host host = Host.create(96L << 20)) {
            LoggedGuest busy = new LoggedGuest(host, mode, 1, PAGES);
            LoggedGuest idle = new LoggedGuest(host, mode, 1, PAGES);
            WorkingSetSampler busySampler = new WorkingSetSampler(busy.vm, WorkingSetSampler.ESX_SAMPLES, 1);
            WorkingSetSampler idleSampler = new WorkingSetSampler(idle.vm, WorkingSetSampler.ESX_SAMPLES, 2);
            assertEquals(1.0, busySampler.estimate(), "presumed active before any sample");
            long populated = busy.vm.populatedFrames();
            double hotShare = (PAGES / 4.0) / populated;
            try (VcpuWriters w = VcpuWriters.start(busy.vm, 1, Driving.ATTACHED,
                (cpu, n) -> cpu.writeLong(LoggedGuest.page((int) (n % (PAGES / 4))), n))) {
                for (int period = 0; period < 12; period++) {
                    busySampler.startPeriod();
                    idleSampler.startPeriod();
                    Thread.sleep(60); // the writer goes round its hot set many times per period
                    busySampler.endPeriod();
                    idleSampler.endPeriod();
                }
            }
            double busyEstimate = busySampler.estimate();
            assertTrue(busyEstimate > hotShare * 0.6 && busyEstimate < hotShare + 0.2,
                "busy: " + busyEstimate + ", hot set " + hotShare + " of its " + populated + " frames");
            assertTrue(idleSampler.estimate() < 0.05, "idle: " + idleSampler.estimate());
            // now idle: the estimate falls, slowly (the slow average holds it up)
            busySampler.startPeriod();
            assertEquals(0.0, busySampler.endPeriod());
            assertTrue(busySampler.estimate() > busyEstimate * 0.5, "one idle period does not make it idle: " + busySampler.estimate());
            for (int period = 0; period < 40; period++) {
                busySampler.startPeriod();
                busySampler.endPeriod();
            }
            assertTrue(busySampler.estimate() < 0.01, "idle for long: " + busySampler.estimate());
            for (int p = 0; p < PAGES / 4; p++) { // every page still holds what was written
                assertEquals(busy.vm.readPhysicalLong(busy.gfnOfPage[p] << 12), busy.vm.vcpu(0).readLong(LoggedGuest.page(p)));
            }
            assertThrows(IllegalArgumentException.class, () -> new WorkingSetSampler(busy.vm, 0, 1));
        }
    }
}
