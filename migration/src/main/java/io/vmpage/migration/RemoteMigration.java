package io.vmpage.migration;

import io.vmpage.engine.Host;
import io.vmpage.engine.Vm;
import io.vmpage.engine.dirty.DirtySnapshot;
import java.util.function.Consumer;

/**
 * A migration between two processes over a {@link TcpTransport}: {@link #send} runs in the source's,
 * {@link #receive} in the destination's (QEMU's {@code migrate tcp:HOST:PORT} and {@code -incoming
 * tcp:PORT}). Nothing but the connection joins them, so the source cannot read the destination's memory
 * to verify it: at the end of the stream the destination hashes every guest page (64 bits,
 * {@link PageScan#hash}; a paravirtual VM's page tables in their canonical form), before it resumes the VM (pre-copy, stop-and-copy) or once every page is there
 * (post-copy, hybrid: then also the frames the guest wrote since the switch-over), and replies with them
 * over the return path; the source compares them with its paused copy.
 *
 * <pre>
 *  reply = | resume nanos | hash nanos | frames n | post-copy: faults, p50 us, p99 us, max us, pushed (else -1) |
 *          | n x page hash | ceil(n / 64) x written-bitmap word |
 *  resume nanos: from the destination having all it needs to resume (END, or POSTCOPY) to its resume,
 *                less the hashing done in between (pre-copy hashes the paused VM first)
 * </pre>
 *
 * Downtime, measured without comparing the two processes' clocks: the source's time from its pause to
 * the last byte the destination needed handed to the socket, plus the destination's resume nanos (the
 * last chunk's flight over the link is not in it: tens of microseconds on loopback).
 */
public final class RemoteMigration {
    /** How long the source waits for the destination's reply after the end of the stream. */
    private static final long REPLY_MILLIS = 120_000;
    private static final int PAGE = StreamFormat.PAGE_BYTES;
    /** Words of the reply before the page hashes. */
    private static final int HEAD = 8;

    private RemoteMigration() {
    }

    /**
     * Source side: migrates {@code source} over {@code connection} and verifies it from the reply. The
     * source stays paused (the caller destroys it); on a failure before the END it runs again, logging off.
     *
     * @throws MigrationException when the connection fails or the destination rejects the stream
     */
    public static MigrationReport send(Vm source, TcpTransport connection, MigrationConfig config,
                                       Consumer<MigrationReport.Round> progress) {
        return send(source, connection, config, Devices.none(), progress);
    }

    /** {@link #send(Vm, TcpTransport, MigrationConfig, Consumer)}, with {@code devices}' saved state in the stream. */
    public static MigrationReport send(Vm source, TcpTransport connection, MigrationConfig config, Devices devices,
                                       Consumer<MigrationReport.Round> progress) {
        Migration.Sent sent = Migration.send(source, connection, config, devices, progress);
        return verify(source, connection, config, sent);
    }

    /**
     * Source side of QEMU's postcopy recovery between processes: the post-copy {@code paused} (thrown by
     * {@link #send}) goes on over {@code fresh}, a new connection to the destination, which replies with
     * the frames it holds and then, as {@link #send} expects, with its page hashes.
     *
     * @throws PostCopyPausedException when this connection is lost too (recover again)
     * @throws IllegalArgumentException when {@code paused} is not the source's half
     */
    public static MigrationReport recover(PostCopyPausedException paused, TcpTransport fresh) {
        PostCopyRecovery.Source src = paused.source();
        if (src == null) {
            throw new IllegalArgumentException("this is the destination's half of a paused post-copy, not the source's");
        }
        PostCopyRecovery.resume(src, fresh);
        try {
            return verify(src.vm(), fresh, src.config(), src.sent());
        } catch (PostCopyPausedException e) {
            throw e;
        } catch (RuntimeException e) { // every page went; the destination's hashes did not come back
            throw new MigrationException("post-copy recovered, but the destination's page hashes did not arrive: " + e.getMessage(), e);
        }
    }

    /** Compares the destination's page hashes, its reply on {@code connection}, with the paused source. */
    private static MigrationReport verify(Vm source, TcpTransport connection, MigrationConfig config, Migration.Sent sent) {
        long[] reply = connection.awaitReply(REPLY_MILLIS);
        long frames = source.physicalMap().frames();
        int words = (int) ((frames + 63) >>> 6);
        if (reply.length != HEAD + frames + words || reply[2] != frames) {
            throw new MigrationException("the destination's reply has " + reply.length + " words for a VM of " + frames + " frames");
        }
        long mismatched = 0;
        byte[] page = new byte[PAGE];
        java.util.Map<Long, long[]> tables = Migration.canonicalTables(source);
        for (long gfn = 0; gfn < frames; gfn++) {
            boolean written = (reply[HEAD + (int) frames + (int) (gfn >>> 6)] & (1L << gfn)) != 0;
            if (written) {
                continue; // the guest wrote it on the destination after the switch-over
            }
            Migration.pageAsMigrated(source, tables, gfn, page);
            if (PageScan.hash(page, 0) != reply[HEAD + (int) gfn]) {
                mismatched++;
            }
        }
        boolean postCopy = config.mode() == MigrationConfig.Mode.POSTCOPY || config.mode() == MigrationConfig.Mode.HYBRID;
        long downtime = sent.resumableAt - sent.pausedAt + reply[0];
        return Migration.report(config, source, sent, System.nanoTime(), downtime, true, mismatched,
            postCopy ? new MigrationReport.PostCopy(reply[3], reply[4], reply[5], reply[6], reply[7]) : null);
    }

    /** What a destination process received, and the VM now running on its host. */
    public record Received(Vm vm, long pages, long zeroPages, int rounds, MigrationReport.PostCopy postCopy) {
    }

    /**
     * Destination side: builds the VM from the stream on {@code host}, resumes it (calling {@code
     * resumed} with it then), and replies with the page hashes once every page is there. Returns with the
     * VM running.
     *
     * @throws MigrationException for a lost connection or a bad stream (the partial VM is gone)
     */
    public static Received receive(Host host, TcpTransport connection, Consumer<Vm> resumed) {
        return receive(host, connection, Devices.none(), resumed);
    }

    /** {@link #receive(Host, TcpTransport, Consumer)}, loading the device states the stream carries with {@code devices}. */
    public static Received receive(Host host, TcpTransport connection, Devices devices, Consumer<Vm> resumed) {
        long[] switchOver = new long[2]; // post-copy: when POSTCOPY arrived, when the VM resumed
        Destination.Received r = Destination.receive(host, connection, devices, vm -> {
            switchOver[0] = System.nanoTime();
            Migration.resumeLogged(vm);
            switchOver[1] = System.nanoTime();
            resumed.accept(vm);
        });
        return replyWithHashes(r, connection, switchOver, resumed);
    }

    /**
     * Destination side of QEMU's postcopy recovery between processes: the post-copy {@code paused} (thrown
     * by {@link #receive}) goes on over {@code fresh}, a new connection from the source; once every frame
     * is here the destination replies with its page hashes, as {@link #receive} does.
     *
     * @throws PostCopyPausedException when this connection is lost too (recover again)
     */
    public static Received recover(Destination.Paused paused, TcpTransport fresh) {
        Destination.Received r = Destination.recover(paused, fresh);
        return replyWithHashes(r, fresh, null, vm -> { });
    }

    /**
     * The end of a destination's migration: hashes every page and replies with them (before resuming the
     * VM in pre-copy; post-copy resumed it at the switch-over, {@code switchOver} holding when, or null
     * after a recovery).
     */
    private static Received replyWithHashes(Destination.Received r, TcpTransport connection, long[] switchOver, Consumer<Vm> resumed) {
        Vm vm = r.vm();
        long frames = vm.physicalMap().frames();
        long[] reply = new long[HEAD + (int) frames + (int) ((frames + 63) >>> 6)];
        reply[2] = frames;
        MigrationReport.PostCopy pc = r.postCopy();
        reply[3] = pc == null ? -1 : pc.faults();
        reply[4] = pc == null ? -1 : pc.p50Micros();
        reply[5] = pc == null ? -1 : pc.p99Micros();
        reply[6] = pc == null ? -1 : pc.maxMicros();
        reply[7] = pc == null ? -1 : pc.pagesPushed();
        long start = System.nanoTime();
        hashPages(vm, reply);
        long hashed = System.nanoTime();
        if (r.postCopy() == null) {
            vm.resume();
            reply[0] = System.nanoTime() - hashed;
            resumed.accept(vm);
        } else {
            reply[0] = switchOver != null ? switchOver[1] - switchOver[0] : 0;
            DirtySnapshot written = Migration.writtenSinceSwitchOver(vm); // after the hashes: a write meanwhile is in it
            for (long gfn = written.next(0); gfn >= 0; gfn = written.next(gfn + 1)) {
                reply[HEAD + (int) frames + (int) (gfn >>> 6)] |= 1L << gfn;
            }
        }
        reply[1] = hashed - start;
        connection.reply(reply);
        return new Received(vm, r.pages(), r.zeroPages(), r.rounds(), r.postCopy());
    }

    private static void hashPages(Vm vm, long[] reply) {
        byte[] page = new byte[PAGE];
        long frames = vm.physicalMap().frames();
        java.util.Map<Long, long[]> tables = vm.paused() ? Migration.canonicalTables(vm) : java.util.Map.of(); // PV: pre-copy only
        for (long gfn = 0; gfn < frames; gfn++) {
            Migration.pageAsMigrated(vm, tables, gfn, page);
            reply[HEAD + (int) gfn] = PageScan.hash(page, 0);
        }
    }
}
