package io.vmpage.bench.jmh;

import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Each PagingModeBench operation does what its name says (one invocation, outside JMH). */
class PagingModeBenchTest {
    @ParameterizedTest
    @ValueSource(strings = {"NESTED", "SHADOW", "PARAVIRTUAL"})
    void operationsReadTheGuestData(String mode) {
        PagingModeBench b = new PagingModeBench();
        b.paging = mode;
        b.setUp();
        try {
            for (int i = 0; i < 100; i++) {
                long hot = b.guestReadHot();
                assertTrue(hot >= 0 && hot < 64 || hot == 0, "hot page data " + hot);
                long cold = b.guestReadCold();
                assertTrue(cold >= 0 && cold < 8192, "cold page data " + cold);
                b.pageTableUpdate();
                b.contextSwitch();
                b.contextSwitch(); // and back to the space with the cold range
            }
        } finally {
            b.tearDown();
        }
    }
}
