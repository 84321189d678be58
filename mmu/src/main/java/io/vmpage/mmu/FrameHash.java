package io.vmpage.mmu;

import org.agrona.UnsafeApi;

/**
 * 64-bit content hash of one 4 KiB frame: four independent multiply-rotate lanes over 8-byte words
 * (the round structure of xxHash64, with its published primes), folded and avalanched. Four lanes keep
 * the multiplies independent so the loop runs near memory bandwidth; no allocation.
 */
final class FrameHash {
    private static final long P1 = 0x9E3779B185EBCA87L;
    private static final long P2 = 0xC2B2AE3D27D4EB4FL;
    private static final long P3 = 0x165667B19E3779F9L;
    private static final long P4 = 0x85EBCA77C2B2AE63L;
    private static final long P5 = 0x27D4EB2F165667C5L;

    /** The hash of an all-zero frame. */
    static final long ZERO = zeroHash();

    private FrameHash() {
    }

    private static long zeroHash() {
        long address = UnsafeApi.allocateMemory(MachineMemory.FRAME_SIZE);
        try {
            UnsafeApi.setMemory(address, MachineMemory.FRAME_SIZE, (byte) 0);
            return hash(address);
        } finally {
            UnsafeApi.freeMemory(address);
        }
    }

    /** Hash of the 4096 bytes at native address {@code address}. */
    static long hash(long address) {
        long a = P1 + P2;
        long b = P2;
        long c = 0;
        long d = -P1;
        for (int i = 0; i < MachineMemory.FRAME_SIZE; i += 32) {
            a = round(a, UnsafeApi.getLong(null, address + i));
            b = round(b, UnsafeApi.getLong(null, address + i + 8));
            c = round(c, UnsafeApi.getLong(null, address + i + 16));
            d = round(d, UnsafeApi.getLong(null, address + i + 24));
        }
        long h = Long.rotateLeft(a, 1) + Long.rotateLeft(b, 7) + Long.rotateLeft(c, 12) + Long.rotateLeft(d, 18);
        h = merge(h, a);
        h = merge(h, b);
        h = merge(h, c);
        h = merge(h, d);
        h += MachineMemory.FRAME_SIZE + P5;
        h ^= h >>> 33;
        h *= P2;
        h ^= h >>> 29;
        h *= P3;
        h ^= h >>> 32;
        return h;
    }

    private static long round(long acc, long word) {
        return Long.rotateLeft(acc + word * P2, 31) * P1;
    }

    private static long merge(long h, long lane) {
        return (h ^ round(0, lane)) * P1 + P4;
    }
}
