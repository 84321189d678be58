package io.vmpage.migration;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.VcpuState;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.VmState;
import io.vmpage.mmu.MmuConfig;
import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.CRC32C;

/**
 * The destination of a migration: builds a VM on its host from one stream and hands it over paused,
 * with its memory and vCPU state in place, for the caller to resume (the switch-over). A stream that
 * is truncated, corrupted (its CRC does not match), of another version, or that does not fit the VM
 * it describes is rejected with a {@link MigrationException}, and the partial VM is destroyed: a
 * destination never resumes a VM built from a bad stream.
 */
public final class Destination {
    private Destination() {
    }

    /** What a destination received. */
    public record Received(Vm vm, long pages, long zeroPages, int rounds) {
    }

    /**
     * Reads one stream from {@code transport} into a new VM on {@code host}.
     *
     * @throws MigrationException for a lost connection or a bad stream (the partial VM is gone)
     */
    public static Received receive(Host host, Transport transport) {
        Vm vm = null;
        try {
            ByteBuffer chunk = next(transport, "the stream header");
            CRC32C crc = new CRC32C();
            VmConfig config = header(chunk);
            if (config.memoryBytes() > host.memory().size()) {
                throw new MigrationException("stream describes a VM of " + config.memoryBytes() + " bytes; this host has "
                    + host.memory().size());
            }
            vm = host.createVm(config);
            vm.pause(); // no vCPU runs before its state is in place
            byte[] page = new byte[StreamFormat.PAGE_BYTES];
            long frames = vm.physicalMap().frames();
            long pages = 0;
            long zero = 0;
            int rounds = 0;
            VmState state = null;
            while (true) {
                if (!chunk.hasRemaining()) {
                    crc.update(chunk.flip());
                    transport.release(chunk);
                    chunk = next(transport, "an END record");
                    continue;
                }
                int at = chunk.position();
                byte type = chunk.get();
                switch (type) {
                    case StreamFormat.PAGE: {
                        byte flags = chunk.get();
                        long gfn = chunk.getLong();
                        if (gfn < 0 || gfn >= frames) {
                            throw new MigrationException("stream is corrupted: it sends guest frame " + gfn + ", outside the VM's "
                                + frames + " frames");
                        }
                        if (flags == StreamFormat.PAGE_FULL) {
                            chunk.get(page);
                            vm.writePhysical(gfn << 12, page, 0, page.length);
                        } else if (flags == StreamFormat.PAGE_ZERO) {
                            zero++;
                            if (vm.physicalMap().machineFrame(gfn) >= 0) { // it was sent with contents before
                                java.util.Arrays.fill(page, (byte) 0);
                                vm.writePhysical(gfn << 12, page, 0, page.length);
                            }
                        } else {
                            throw new MigrationException("stream is corrupted: page record of guest frame " + gfn + " has unknown flags " + flags);
                        }
                        pages++;
                        break;
                    }
                    case StreamFormat.ROUND:
                        rounds = Math.max(rounds, chunk.getInt() + 1);
                        break;
                    case StreamFormat.STATE:
                        state = state(chunk, config);
                        break;
                    case StreamFormat.END: {
                        ByteBuffer covered = chunk.duplicate();
                        covered.position(0).limit(at);
                        crc.update(covered);
                        long sent = chunk.getLong();
                        int expected = chunk.getInt();
                        if (expected != (int) crc.getValue()) {
                            throw new MigrationException("stream is corrupted: CRC32C 0x" + Integer.toHexString((int) crc.getValue())
                                + " where the source computed 0x" + Integer.toHexString(expected));
                        }
                        if (sent != pages) {
                            throw new MigrationException("stream ended after " + pages + " page records; the source sent " + sent);
                        }
                        if (state == null) {
                            throw new MigrationException("stream ended without the vCPU state");
                        }
                        transport.release(chunk);
                        if (transport.receive() != null) {
                            throw new MigrationException("stream continues after its END record");
                        }
                        vm.importState(state);
                        return new Received(vm, pages, zero, rounds);
                    }
                    default:
                        throw new MigrationException("stream is corrupted: record type " + type + " at chunk offset " + at);
                }
            }
        } catch (BufferUnderflowException e) {
            destroy(host, vm);
            throw new MigrationException("stream is corrupted or truncated: a record is cut short", e);
        } catch (RuntimeException e) {
            destroy(host, vm);
            if (e instanceof MigrationException) {
                throw e;
            }
            throw new MigrationException("stream rejected: " + e.getMessage(), e);
        }
    }

    private static void destroy(Host host, Vm vm) {
        if (vm != null) {
            host.destroyVm(vm);
        }
    }

    private static ByteBuffer next(Transport transport, String expecting) {
        ByteBuffer b = transport.receive();
        if (b == null) {
            throw new MigrationException("stream is truncated: it ended before " + expecting);
        }
        return b;
    }

    private static VmConfig header(ByteBuffer b) {
        if (b.remaining() < 8) {
            throw new MigrationException("stream is truncated: " + b.remaining() + " bytes, not a header");
        }
        int magic = b.getInt();
        if (magic != StreamFormat.MAGIC) {
            throw new MigrationException("not a vmpage migration stream (magic 0x" + Integer.toHexString(magic) + ")");
        }
        short version = b.getShort();
        if (version != StreamFormat.VERSION) {
            throw new MigrationException("stream version " + version + " is not supported (this reads version "
                + StreamFormat.VERSION + ")");
        }
        b.getShort();
        long memory = b.getLong();
        int vcpus = b.getInt();
        PagingMode paging = StreamWriter.paging(b.get());
        int levels = b.get();
        MmuConfig mmu = MmuConfig.defaults().withTlbGeometry(b.getInt(), b.getInt(), b.getInt(), b.getInt())
            .withTlb(b.get() != 0).withPagingStructureCache(b.getInt()).withNestedCache(b.getInt()).withMaxPhysAddrBits(b.get());
        return new VmConfig(memory, vcpus, paging, levels, mmu);
    }

    private static VmState state(ByteBuffer b, VmConfig config) {
        int n = b.getInt();
        if (n != config.vcpus()) {
            throw new MigrationException("stream carries " + n + " vCPU states for a VM of " + config.vcpus() + " vCPUs");
        }
        List<VcpuState> vcpus = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            long cr0 = b.getLong();
            long cr3 = b.getLong();
            long cr4 = b.getLong();
            long efer = b.getLong();
            byte flags = b.get();
            vcpus.add(new VcpuState(cr0, cr3, (flags & 1) != 0, cr4, efer, (flags & 2) != 0));
        }
        return new VmState(config, vcpus);
    }
}
