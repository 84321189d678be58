package io.vmpage.migration;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vm;
import io.vmpage.engine.VmConfig;
import io.vmpage.engine.guest.GuestKernel;
import io.vmpage.engine.guest.GuestProgram;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Device state in the stream ({@link Devices}, the DEVICE record): the guest kernel model's and a
 * {@link GuestProgram}'s state outside guest memory travel with the VM, so a seeded program migrated
 * half way observes exactly the trace it observes unmigrated, in every paging mode and migration mode;
 * and a stream whose device state is unknown, cut short or refused is rejected with the VM discarded.
 */
class DeviceStateMigrationTest {
    private static final long MIB = 1L << 20;
    private static final int HALF = 2000;

    @ParameterizedTest(name = "{0} {1} {2}")
    @CsvSource({"NESTED, PRECOPY, mixed", "NESTED, STOPCOPY, churn", "NESTED, POSTCOPY, mixed", "NESTED, HYBRID, churn",
        "SHADOW, PRECOPY, churn", "SHADOW, STOPCOPY, mixed", "SHADOW, POSTCOPY, churn", "SHADOW, HYBRID, mixed",
        "PARAVIRTUAL, PRECOPY, mixed", "PARAVIRTUAL, STOPCOPY, churn"})
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void aProgramMigratedHalfWayObservesItsUnmigratedTrace(PagingMode paging, MigrationConfig.Mode mode, String mix) {
        long seed = 31;
        GuestProgram.Trace reference = unmigrated(paging, mix, seed);
        try (Host source = Host.create(96 * MIB); Host destination = Host.create(96 * MIB)) {
            Vm vm = source.createVm(VmConfig.of(32 * MIB).withPaging(paging).withVcpus(2));
            GuestKernel kernel = GuestKernel.boot(vm);
            GuestProgram program = new GuestProgram(kernel, GuestProgram.Mix.named(mix), seed);
            program.run(HALF);
            AtomicReference<GuestKernel> movedKernel = new AtomicReference<>();
            AtomicReference<GuestProgram> movedProgram = new AtomicReference<>();
            Devices devices = guestDevices(kernel, program, movedKernel, movedProgram);
            Migration.Result result = Migration.toHost(vm, destination, MigrationConfig.defaults().withMode(mode)
                .withStopRules(java.util.EnumSet.of(MigrationConfig.StopRule.XEN_MAX_ROUNDS)).withMaxRounds(2), devices);
            assertTrue(result.report().verified(), result.report().mismatchedPages() + " pages differ");
            source.destroyVm(vm); // nothing of the source is left to lean on
            assertTrue(movedProgram.get() != null, "the program's state was loaded on the destination");
            GuestProgram.Trace after = movedProgram.get().run(HALF);
            assertEquals(reference.count(), after.count(), "trace length");
            assertArrayEquals(reference.values(), after.values(), "the migrated program observed something else");
            assertEquals(reference.faults(), after.faults());
            assertTrue(movedKernel.get().vm() == result.destination());
        }
    }

    /** The same through a TCP connection and the remote-migration API, the destination on its own thread. */
    @Test
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void aProgramMigratedToAnotherProcessCarriesOnThere() throws Exception {
        GuestProgram.Trace reference = unmigrated(PagingMode.SHADOW, "mixed", 5);
        try (Host source = Host.create(96 * MIB); Host destination = Host.create(96 * MIB);
             ServerSocketChannel listener = TcpTransport.listen(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            AtomicReference<Object> after = new AtomicReference<>();
            Thread destinationProcess = new Thread(() -> {
                AtomicReference<GuestKernel> k = new AtomicReference<>();
                AtomicReference<GuestProgram> p = new AtomicReference<>();
                Devices loaders = guestDevices(null, null, k, p);
                try (TcpTransport end = TcpTransport.accept(listener, 64 << 10, 10_000)) {
                    RemoteMigration.receive(destination, end, loaders, vm -> { });
                    after.set(p.get().run(HALF));
                } catch (Throwable t) {
                    after.set(t);
                }
            });
            destinationProcess.start();
            Vm vm = source.createVm(VmConfig.of(32 * MIB).withPaging(PagingMode.SHADOW).withVcpus(2));
            GuestKernel kernel = GuestKernel.boot(vm);
            GuestProgram program = new GuestProgram(kernel, GuestProgram.Mix.named("mixed"), 5);
            program.run(HALF);
            try (TcpTransport link = TcpTransport.connect((InetSocketAddress) listener.getLocalAddress(), 64 << 10, 10_000)) {
                MigrationReport report = RemoteMigration.send(vm, link, MigrationConfig.defaults(),
                    guestDevices(kernel, program, null, null), round -> { });
                assertTrue(report.verified());
            }
            destinationProcess.join();
            assertTrue(after.get() instanceof GuestProgram.Trace, String.valueOf(after.get()));
            assertArrayEquals(reference.values(), ((GuestProgram.Trace) after.get()).values());
        }
    }

    /** A state larger than a chunk goes in pieces and arrives whole; device order is kept. */
    @Test
    void aLargeDeviceStateGoesInPiecesAndArrivesWholeInOrder() {
        byte[] big = new byte[3 << 20];
        new Random(7).nextBytes(big);
        try (Host source = Host.create(64 * MIB); Host destination = Host.create(64 * MIB)) {
            Vm vm = source.createVm(VmConfig.of(16 * MIB));
            vm.writePhysicalLong(4096, 42);
            java.util.List<String> order = new java.util.ArrayList<>();
            AtomicReference<byte[]> got = new AtomicReference<>();
            Devices devices = Devices.none().save("disk", () -> big).save("nic", () -> new byte[0])
                .load("nic", (v, s) -> order.add("nic " + s.length)).load("disk", (v, s) -> {
                    order.add("disk");
                    got.set(s);
                });
            Migration.Result r = Migration.toHost(vm, destination, MigrationConfig.defaults().withMode(MigrationConfig.Mode.STOPCOPY),
                devices);
            assertTrue(r.report().verified());
            assertArrayEquals(big, got.get());
            assertEquals(java.util.List.of("disk", "nic 0"), order, "loaded in the order the source saved them");
        }
    }

    /**
     * A device the destination does not load, a loader that refuses its state, and a saver that fails
     * on the source: the migration fails, the destination keeps nothing, the source runs again.
     */
    @Test
    void unknownRefusedAndFailedDeviceStatesFailTheMigrationCleanly() {
        try (Host source = Host.create(64 * MIB); Host destination = Host.create(64 * MIB)) {
            Vm vm = source.createVm(VmConfig.of(16 * MIB));
            vm.writePhysicalLong(4096, 42);
            long free = destination.frames().freeFrames();
            MigrationException unknown = assertThrows(MigrationException.class, () -> Migration.toHost(vm, destination,
                MigrationConfig.defaults(), Devices.none().save("rtc", () -> new byte[8])));
            assertTrue(unknown.getMessage().contains("device 'rtc', which this destination does not load"), unknown.getMessage());
            MigrationException refused = assertThrows(MigrationException.class, () -> Migration.toHost(vm, destination,
                MigrationConfig.defaults().withMode(MigrationConfig.Mode.POSTCOPY), Devices.none().save("rtc", () -> new byte[8])
                    .load("rtc", (v, s) -> {
                        throw new IllegalArgumentException("not an RTC state");
                    })));
            assertTrue(refused.getMessage().contains("device rtc rejected its state: not an RTC state"), refused.getMessage());
            MigrationException busy = assertThrows(MigrationException.class, () -> Migration.toHost(vm, destination,
                MigrationConfig.defaults(), Devices.none().save("rtc", () -> {
                    throw new MigrationException("rtc busy");
                }).load("rtc", (v, s) -> { })));
            assertTrue(busy.getMessage().contains("rtc busy"), busy.getMessage());
            assertEquals(0, destination.vms().size());
            assertEquals(free, destination.frames().freeFrames(), "the destination's partial VMs are gone");
            assertTrue(!vm.paused() && !vm.dirtyLog().enabled(), "the source runs again, logging off");
            assertEquals(42, vm.readPhysicalLong(4096));
        }
    }

    /** Hand-made streams: a device piece that does not follow the last, and a device cut short at the END. */
    @Test
    void devicePiecesOutOfOrderOrCutShortAreRejected() {
        Devices rtc = Devices.none().load("rtc", (v, s) -> { });
        MigrationException gap = receiveHandMade(rtc, b -> {
            state(b);
            device(b, "rtc", 16, 0, 4);
            device(b, "rtc", 16, 8, 4);
        });
        assertTrue(gap.getMessage().contains("a piece of device 'rtc' at 8"), gap.getMessage());
        MigrationException cut = receiveHandMade(rtc, b -> {
            state(b);
            device(b, "rtc", 16, 0, 4);
            java.util.zip.CRC32C crc = new java.util.zip.CRC32C();
            crc.update(b.duplicate().flip());
            b.put(StreamFormat.END).putLong(0).putInt((int) crc.getValue());
        });
        assertTrue(cut.getMessage().contains("device 'rtc' has 4 of its 16 state bytes"), cut.getMessage());
        MigrationException early = receiveHandMade(rtc, b -> {
            header(b);
            device(b, "rtc", 16, 0, 4);
        });
        assertTrue(early.getMessage().contains("device state before the vCPU state"), early.getMessage());
    }

    /** {@code kernel}/{@code program} saved on the source (when given), and loaded into the references on the destination. */
    private static Devices guestDevices(GuestKernel kernel, GuestProgram program, AtomicReference<GuestKernel> movedKernel,
                                        AtomicReference<GuestProgram> movedProgram) {
        Devices d = Devices.none();
        if (kernel != null) {
            d.save("guest-kernel", kernel::saveState).save("guest-program", program::saveState);
        }
        if (movedKernel != null) {
            d.load("guest-kernel", (vm, s) -> movedKernel.set(GuestKernel.restore(vm, s)))
                .load("guest-program", (vm, s) -> movedProgram.set(GuestProgram.restore(movedKernel.get(), s)));
        }
        return d;
    }

    private static GuestProgram.Trace unmigrated(PagingMode paging, String mix, long seed) {
        try (Host host = Host.create(96 * MIB)) {
            GuestKernel kernel = GuestKernel.boot(host.createVm(VmConfig.of(32 * MIB).withPaging(paging).withVcpus(2)));
            GuestProgram program = new GuestProgram(kernel, GuestProgram.Mix.named(mix), seed);
            program.run(HALF);
            return program.run(HALF);
        }
    }

    private static void state(ByteBuffer b) {
        header(b);
        b.put(StreamFormat.STATE).putInt(1).putLong(0).putLong(0).putLong(0).putLong(0).put((byte) 0);
    }

    private static void header(ByteBuffer b) {
        b.putInt(StreamFormat.MAGIC).putShort(StreamFormat.VERSION).putShort((short) 0);
        b.putLong(16 * MIB).putInt(1).put((byte) 0).put((byte) 4);
        b.putInt(128).putInt(12).putInt(8).putInt(4).put((byte) 1).putInt(32).putInt(64).put((byte) 46);
    }

    private static void device(ByteBuffer b, String name, int total, int offset, int part) {
        byte[] n = name.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        b.put(StreamFormat.DEVICE).put((byte) n.length).put(n).putInt(total).putInt(offset).putInt(part).put(new byte[part]);
    }

    private static MigrationException receiveHandMade(Devices devices, java.util.function.Consumer<ByteBuffer> write) {
        try (Host destination = Host.create(64 * MIB); MemoryTransport t = new MemoryTransport()) {
            ByteBuffer b = t.acquire();
            write.accept(b);
            b.flip();
            t.send(b);
            t.finish();
            MigrationException e = assertThrows(MigrationException.class, () -> Destination.receive(destination, t, devices, vm -> { }));
            assertEquals(0, destination.vms().size());
            return e;
        }
    }
}
