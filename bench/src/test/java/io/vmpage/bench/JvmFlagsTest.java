package io.vmpage.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;

class JvmFlagsTest {
    @Test
    void builtResourceHasTheUnsafeExport() {
        assertTrue(JvmFlags.get().contains("--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED"),
            JvmFlags.get().toString());
    }

    @Test
    void versionedLinesApplyFromTheirJdkOn() {
        String text = "--a --b\njdk23+ --c\njdk25+\n";
        assertEquals(List.of("--a", "--b"), JvmFlags.forJdk(text, 17));
        assertEquals(List.of("--a", "--b", "--c"), JvmFlags.forJdk(text, 23));
        assertEquals(List.of("--a", "--b", "--c"), JvmFlags.forJdk(text, 25));
    }

    @Test
    void unfilteredResourceIsRejected() {
        assertThrows(IllegalStateException.class, () -> JvmFlags.forJdk("${vmpage.jvm.flags}\n", 17));
    }
}
