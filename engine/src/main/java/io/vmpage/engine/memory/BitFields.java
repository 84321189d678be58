package io.vmpage.engine.memory;

import io.vmpage.engine.Internal;

/**
 * The compile-time check of a packed encoding, done at class initialization: the named fields' masks
 * must not overlap (KVM's {@code static_assert}s in {@code spte.h}, Aeron's {@code FrameDescriptor}).
 * Each encoding class calls it from its static initializer, so an overlap fails the first use, and its
 * test checks the same masks.
 */
@Internal
public final class BitFields {
    private BitFields() {
    }

    /**
     * Throws {@link IllegalStateException} naming the first two fields of {@code encoding} that share a
     * bit; {@code namesAndMasks} alternates a field's name and its mask ({@link Long}).
     */
    public static void requireDisjoint(String encoding, Object... namesAndMasks) {
        for (int i = 0; i < namesAndMasks.length; i += 2) {
            long a = (Long) namesAndMasks[i + 1];
            if (a == 0) {
                throw new IllegalStateException(encoding + ": field " + namesAndMasks[i] + " has no bits");
            }
            for (int j = i + 2; j < namesAndMasks.length; j += 2) {
                long b = (Long) namesAndMasks[j + 1];
                if ((a & b) != 0) {
                    throw new IllegalStateException(encoding + ": fields " + namesAndMasks[i] + " and " + namesAndMasks[j]
                        + " share bits 0x" + Long.toHexString(a & b));
                }
            }
        }
    }
}
