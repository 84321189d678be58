package io.vmpage.mmu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.reflect.Proxy;
import net.openhft.posix.PosixAPI;
import net.openhft.posix.PosixRuntimeException;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/** A region the host cannot supply is a {@link NativeMemoryException} naming the size and the OS error. */
class NativeRegionTest {
    /** 1 PiB: beyond the 128 TiB of user address space of x86-64 4-level paging, whatever the overcommit policy. */
    private static final long TOO_LARGE = 1L << 50;

    @Test
    void anUnmappableSizeIsANativeMemoryExceptionNamingTheSizeAndTheError() {
        Assumptions.assumeTrue(NativeRegion.isLazy(), "anonymous mappings on this host");
        NativeMemoryException e = assertThrows(NativeMemoryException.class, () -> NativeRegion.allocate(TOO_LARGE));
        assertEquals(TOO_LARGE, e.size());
        assertEquals(12, e.errno(), "ENOMEM");
        assertEquals("cannot map 1125899906842624 bytes (1 PiB) of native memory: Cannot allocate memory (errno 12)",
            e.getMessage());
    }

    @Test
    void machineMemoryAndImagesReportTheSameException() {
        NativeMemoryException e = assertThrows(NativeMemoryException.class, () -> MachineMemory.allocate(TOO_LARGE));
        assertTrue(e.getMessage().contains("1125899906842624 bytes (1 PiB)"), e.getMessage());
    }

    @Test
    void aBindingThatThrowsIsTranslated() {
        PosixAPI throwing = posix((name, args) -> {
            if (name.equals("mmap")) {
                throw new PosixRuntimeException("Cannot allocate memory", 12);
            }
            throw new AssertionError("unexpected call " + name);
        });
        NativeMemoryException e = assertThrows(NativeMemoryException.class, () -> NativeRegion.map(throwing, 1L << 40));
        assertEquals("cannot map 1099511627776 bytes (1 TiB) of native memory: Cannot allocate memory (errno 12)",
            e.getMessage());
        assertTrue(e.getCause() instanceof PosixRuntimeException);
    }

    @Test
    void aBindingThatReturnsMapFailedIsReportedWithErrno() {
        PosixAPI returning = posix((name, args) -> switch (name) {
            case "mmap" -> -1L;
            case "lastError" -> 12;
            case "strerror" -> "Cannot allocate memory";
            default -> throw new AssertionError("unexpected call " + name);
        });
        NativeMemoryException e = assertThrows(NativeMemoryException.class,
            () -> NativeRegion.map(returning, 64L << 30));
        assertEquals("cannot map 68719476736 bytes (64 GiB) of native memory: Cannot allocate memory (errno 12)",
            e.getMessage());
        assertEquals(12, e.errno());
    }

    @Test
    void theAllocateFallbackReportsAFailedAllocation() {
        NativeMemoryException e = assertThrows(NativeMemoryException.class, () -> NativeRegion.allocateEager(TOO_LARGE));
        assertTrue(e.getMessage().startsWith("cannot allocate 1125899906842624 bytes (1 PiB) of native memory: "),
            e.getMessage());
        assertThrows(NativeMemoryException.class, () -> NativeRegion.allocateEager(Long.MAX_VALUE - 1));
    }

    @Test
    void sizesAreDescribedExactlyAndInBinaryUnits() {
        assertEquals("1023 bytes", NativeMemoryException.describe(1023));
        assertEquals("4096 bytes (4 KiB)", NativeMemoryException.describe(4096));
        assertEquals("1610612736 bytes (1.5 GiB)", NativeMemoryException.describe(3L << 29));
        assertEquals("2199090364416 bytes (2.0 TiB)", NativeMemoryException.describe((2L << 40) + (64L << 20)));
    }

    private interface Calls {
        Object call(String name, Object[] args);
    }

    private static PosixAPI posix(Calls calls) {
        return (PosixAPI) Proxy.newProxyInstance(NativeRegionTest.class.getClassLoader(), new Class<?>[] {PosixAPI.class},
            (proxy, method, args) -> calls.call(method.getName(), args));
    }
}
