package io.vmpage.migration;

import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.Vm;
import io.vmpage.engine.dirty.DirtyLog;
import io.vmpage.engine.dirty.DirtySnapshot;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Live migration of a running VM (Clark et al., NSDI 2005; QEMU's and Xen's pre-copy), over the
 * engine's public API and a {@link Transport}.
 *
 * <p><b>Pre-copy.</b> The dirty log is switched on, round 0 sends every populated page (zero pages as
 * a flag, never-populated pages not at all), then each round harvests the log and sends what it
 * reported, while the guest keeps writing. After each harvest the stop rules are checked
 * ({@link MigrationConfig.StopRule}): QEMU's (the pages left, at the bandwidth measured over windows of
 * at least 100 ms, would take less than the downtime limit), Xen's (a round cap, fewer than 50 pages
 * dirtied, more than 3x memory sent). Then stop-and-copy: the VM is paused, a last harvest reports
 * every write not yet sent, those pages and the vCPU state go out, and the destination resumes the VM.
 * <b>Stop-and-copy</b> alone pauses first and sends every populated page once.
 *
 * <p><b>Hybrid</b>: pre-copy until a stop rule holds, then, paused, the frames written since they were
 * sent go by post-copy instead of a stop-and-copy ({@link #postCopy}).
 *
 * <p><b>XBZRLE</b> (QEMU, {@link MigrationConfig#xbzrleCacheBytes}): after round 0, a page sent again
 * goes as a delta against its copy in a bounded cache when the delta is smaller ({@link PageSender}).
 *
 * <p><b>Failure.</b> If the connection is lost before the switch-over, the source VM keeps running
 * with nothing lost and dirty logging off (it is resumed if the migration paused it), and the
 * destination discards its partial VM ({@link Destination}).
 */
public final class Migration {
    private static final int PAGE = 4096;
    /** QEMU measures bandwidth over windows of at least this long. */
    private static final long BANDWIDTH_WINDOW_NANOS = 100_000_000L;
    /** Xen's "few dirty pages" threshold. */
    private static final long XEN_FEW_DIRTY_PAGES = 50;

    private Migration() {
    }

    /** A finished in-process migration: the VM now running on the destination host, and the report. */
    public record Result(Vm destination, MigrationReport report) {
    }

    /**
     * Migrates {@code source} to a new VM on {@code destinationHost} in this JVM over a
     * {@link MemoryTransport}, verifies the destination's memory against the paused source page by page
     * before the switch-over (the report's downtime leaves that pass out), then resumes the destination. The source stays paused: the caller destroys
     * it (its vCPUs' threads then fail with the stale-handle error, and can carry on on the destination).
     */
    public static Result toHost(Vm source, Host destinationHost, MigrationConfig config) {
        return toHost(source, destinationHost, config, round -> { });
    }

    /** {@link #toHost}, calling {@code progress} on the source thread after each round. */
    public static Result toHost(Vm source, Host destinationHost, MigrationConfig config,
                                java.util.function.Consumer<MigrationReport.Round> progress) {
        return toHost(source, destinationHost, config, progress, vm -> { });
    }

    /**
     * {@link #toHost}, also calling {@code switchOver} with the destination VM as soon as it runs (after
     * the stop-and-copy, or at post-copy's switch-over while its pages still arrive): the moment to move
     * the guest's drivers over, e.g. {@link Vm#retireVcpus} on the source so its vCPU threads follow.
     */
    public static Result toHost(Vm source, Host destinationHost, MigrationConfig config,
                                java.util.function.Consumer<MigrationReport.Round> progress,
                                java.util.function.Consumer<Vm> switchOver) {
        try (MemoryTransport transport = new MemoryTransport()) {
            return over(source, destinationHost, transport, config, Devices.none(), progress, switchOver);
        }
    }

    /** {@link #toHost}, moving {@code devices}' state with the VM (saved on the source, loaded on the destination). */
    public static Result toHost(Vm source, Host destinationHost, MigrationConfig config, Devices devices) {
        try (MemoryTransport transport = new MemoryTransport()) {
            return over(source, destinationHost, transport, config, devices, round -> { }, vm -> { });
        }
    }

    /**
     * {@link #toHost} over {@code transport} (for example {@link TcpTransport#loopback}), whose two ends
     * this process drives on two threads; the caller closes it.
     */
    public static Result toHost(Vm source, Host destinationHost, Transport transport, MigrationConfig config,
                                java.util.function.Consumer<MigrationReport.Round> progress,
                                java.util.function.Consumer<Vm> switchOver) {
        return over(source, destinationHost, transport, config, Devices.none(), progress, switchOver);
    }

    /**
     * {@link #toHost} over {@code transport}, moving {@code devices}' state with the VM: their loaders
     * run on the destination before {@code switchOver} sees it.
     */
    public static Result toHost(Vm source, Host destinationHost, Transport transport, MigrationConfig config, Devices devices,
                                java.util.function.Consumer<MigrationReport.Round> progress,
                                java.util.function.Consumer<Vm> switchOver) {
        return over(source, destinationHost, transport, config, devices, progress, switchOver);
    }

    /** {@link #toHost} over a given transport (tests break it on purpose). */
    static Result over(Vm source, Host destinationHost, Transport transport, MigrationConfig config) {
        return over(source, destinationHost, transport, config, Devices.none(), round -> { }, vm -> { });
    }

    private static Result over(Vm source, Host destinationHost, Transport transport, MigrationConfig config, Devices devices,
                               java.util.function.Consumer<MigrationReport.Round> progress,
                               java.util.function.Consumer<Vm> switchOver) {
        AtomicReference<Object> received = new AtomicReference<>();
        java.util.concurrent.atomic.AtomicLong switchedAt = new java.util.concurrent.atomic.AtomicLong();
        java.util.function.Consumer<Vm> postCopySwitch = vm -> {
            resumeLogged(vm);
            switchedAt.set(System.nanoTime());
            switchOver.accept(vm);
        };
        MigrationThreads.Task receiver = MigrationThreads.start("migration-destination-vm" + source.id(), () -> {
            try {
                received.set(Destination.receive(destinationHost, transport, devices, postCopySwitch));
            } catch (Throwable t) {
                received.set(t);
                transport.fail("the destination rejected the stream: " + t.getMessage());
            }
        });
        Sent sent;
        try {
            sent = send(source, transport, config, devices, progress);
        } catch (PostCopyPausedException e) {
            transport.fail("the source failed: " + e.getMessage());
            receiver.join("the destination");
            if (received.get() instanceof PostCopyPausedException there && there.destination() != null) {
                throw new PostCopyPausedException(e.getMessage(), e, there.destination(), e.source(), switchedAt.get());
            }
            source.resume(); // the destination failed before it ran the VM: this copy is the VM, whole
            throw new MigrationException("post-copy failed before the destination resumed the VM, which runs on here: "
                + e.getMessage(), e);
        } catch (RuntimeException e) {
            transport.fail("the source failed: " + e.getMessage());
            receiver.join("the destination");
            throw e;
        }
        awaitDestination(receiver, transport);
        Object outcome = received.get();
        if (outcome instanceof PostCopyPausedException there && there.destination() != null) { // the source finished, the destination did not
            throw new PostCopyPausedException(there.getMessage(), there, there.destination(),
                new PostCopyRecovery.Source(source, sent.remote, sent, config), switchedAt.get());
        }
        if (outcome instanceof Throwable t) {
            resumeAfterFailure(source, sent.pausedAt);
            throw t instanceof MigrationException m ? m : new MigrationException("destination failed: " + t.getMessage(), t);
        }
        Destination.Received r = (Destination.Received) outcome;
        long mismatched;
        long resumedAt;
        if (r.postCopy() != null) { // running already: compare every frame it has not written since the switch-over
            mismatched = postCopyMismatches(config, source, r.vm());
            resumedAt = switchedAt.get();
        } else {
            long ready = System.nanoTime();
            mismatched = config.verify() ? differing(source, r.vm()).size() : 0; // both paused: not part of the downtime
            long verifying = System.nanoTime() - ready;
            r.vm().resume();
            resumedAt = System.nanoTime() - verifying;
            switchOver.accept(r.vm());
        }
        MigrationReport report = report(config, source, sent, r.postCopy() != null ? System.nanoTime() : resumedAt,
            resumedAt - sent.pausedAt, config.verify(), mismatched, r.postCopy());
        return new Result(r.vm(), report);
    }

    /**
     * QEMU's postcopy recovery in one process: the post-copy that {@code paused} reports goes on over
     * {@code fresh}, a new connection (the old one is gone). The destination replies with the frames it
     * holds, the source sends every other remote frame once (those a vCPU waits for first), and the result
     * is as {@link #toHost}'s: the destination verified against the paused source, except the frames its
     * guest wrote since the switch-over. The source stays paused (the caller destroys it).
     *
     * @throws PostCopyPausedException when this connection is lost too (recover again with another)
     * @throws IllegalArgumentException when {@code paused} is only one side's half (from another process)
     */
    public static Result recover(PostCopyPausedException paused, Transport fresh) {
        PostCopyRecovery.Source src = paused.source();
        Destination.Paused there = paused.destination();
        if (src == null || there == null) {
            throw new IllegalArgumentException("an in-process recovery needs both halves of the paused post-copy; this one has only the "
                + (src == null ? "destination's" : "source's"));
        }
        AtomicReference<Object> received = new AtomicReference<>();
        MigrationThreads.Task receiver = MigrationThreads.start("migration-recovery-vm" + src.vm().id(), () -> {
            try {
                received.set(Destination.recover(there, fresh));
            } catch (Throwable t) {
                received.set(t);
                fresh.fail("the destination failed to recover: " + t.getMessage());
            }
        });
        try {
            PostCopyRecovery.resume(src, fresh);
        } catch (PostCopyPausedException e) {
            fresh.fail(e.getMessage());
            receiver.join("the destination");
            throw new PostCopyPausedException(e.getMessage(), e, there, src, paused.switchedAt());
        }
        receiver.join("the destination");
        if (received.get() instanceof Throwable t) {
            throw new PostCopyPausedException("post-copy recovery failed on the destination: " + t.getMessage(), t, there, src,
                paused.switchedAt());
        }
        Destination.Received r = (Destination.Received) received.get();
        MigrationConfig config = src.config();
        Sent sent = src.sent();
        long mismatched = postCopyMismatches(config, src.vm(), r.vm());
        MigrationReport report = report(config, src.vm(), sent, System.nanoTime(), paused.switchedAt() - sent.pausedAt,
            config.verify(), mismatched, r.postCopy());
        return new Result(r.vm(), report);
    }

    /** The report of a migration whose source side did {@code sent}, ended at {@code endedAt}. */
    static MigrationReport report(MigrationConfig config, Vm source, Sent sent, long endedAt, long downtimeNanos, boolean compared,
                                  long mismatched, MigrationReport.PostCopy postCopy) {
        return new MigrationReport(config.mode(), source.pagingMode().name(), source.memorySize(),
            sent.rounds.size(), sent.stopReason, sent.pages, sent.zeroPages, sent.bytes, sent.setupNanos,
            endedAt - sent.startedAt, downtimeNanos, sent.dirtyRate, sent.bandwidth,
            sent.rounds, compared && mismatched == 0, mismatched, sent.throttle, postCopy, sent.xbzrle);
    }

    /**
     * Post-copy's switch-over on the destination: resumes {@code vm} with its dirty log on, so what the
     * guest writes from now on is left out of the comparison with the paused source.
     */
    static void resumeLogged(Vm vm) {
        vm.dirtyLog().enable(io.vmpage.engine.dirty.DirtyTracking.WRITE_PROTECT);
        vm.resume();
    }

    /**
     * After a post-copy, the destination running: the frames that differ from the paused source, except
     * those its guest wrote since the switch-over (0 without verification). Ends the destination's logging.
     */
    private static long postCopyMismatches(MigrationConfig config, Vm source, Vm destination) {
        List<Long> differ = config.verify() ? differing(source, destination) : List.of();
        DirtySnapshot written = writtenSinceSwitchOver(destination);
        return differ.stream().filter(gfn -> !written.isDirty(gfn)).count();
    }

    /** Ends what {@link #resumeLogged} started: the frames the destination wrote since its switch-over. */
    static DirtySnapshot writtenSinceSwitchOver(Vm vm) {
        DirtyLog log = vm.dirtyLog();
        log.disable();
        DirtySnapshot written = new DirtySnapshot(vm.physicalMap().frames());
        log.harvest(written);
        return written;
    }

    /** On 2 cores or more the source's thread, done sending, copies pieces of the destination's pages while it waits. */
    private static final boolean HELP_DESTINATION = Runtime.getRuntime().availableProcessors() > 1;

    /**
     * Waits for the destination's thread, which is still copying pages by reference when the source sent
     * its last record: meanwhile the source's thread takes pieces of the batch it copies, if it shares one
     * ({@link Transport#sharedCopy}), instead of leaving a core idle.
     */
    private static void awaitDestination(MigrationThreads.Task receiver, Transport transport) {
        if (HELP_DESTINATION && transport.offeredMemory() != null) {
            org.agrona.concurrent.IdleStrategy idle = Waiting.backOff();
            while (!receiver.ended()) {
                SharedCopy copy = transport.sharedCopy();
                if (copy != null && copy.help()) {
                    idle.reset();
                } else {
                    idle.idle();
                }
            }
        }
        receiver.join("the destination");
    }

    private static void resumeAfterFailure(Vm source, long pausedAt) {
        if (pausedAt != 0 && source.paused()) {
            source.resume();
        }
    }

    /**
     * The guest frames whose contents differ between the two VMs. A paravirtual VM's page tables hold
     * machine frame numbers, which differ between hosts by design: those pages are compared in their
     * canonical form ({@link #pageAsMigrated}).
     */
    static List<Long> differing(Vm a, Vm b) {
        java.util.Map<Long, long[]> tablesA = canonicalTables(a);
        java.util.Map<Long, long[]> tablesB = canonicalTables(b);
        byte[] pa = new byte[PAGE];
        byte[] pb = new byte[PAGE];
        List<Long> differ = new ArrayList<>();
        for (long gfn = 0; gfn < a.physicalMap().frames(); gfn++) {
            pageAsMigrated(a, tablesA, gfn, pa);
            pageAsMigrated(b, tablesB, gfn, pb);
            if (!Arrays.equals(pa, pb)) {
                differ.add(gfn);
            }
        }
        return differ;
    }

    /** A paused paravirtual VM's page tables by guest frame, canonicalized; empty for the other modes. */
    static java.util.Map<Long, long[]> canonicalTables(Vm vm) {
        java.util.Map<Long, long[]> tables = new java.util.HashMap<>();
        if (vm.pagingMode() == PagingMode.PARAVIRTUAL) {
            for (io.vmpage.engine.PvTable t : vm.exportState().pvTables()) {
                tables.put(t.gfn(), t.entries());
            }
        }
        return tables;
    }

    /**
     * Guest frame {@code gfn} as a migration means it, into {@code page}: its bytes, or for a paravirtual
     * page table in {@code tables} its canonical entries (little-endian), which are equal on both hosts.
     */
    static void pageAsMigrated(Vm vm, java.util.Map<Long, long[]> tables, long gfn, byte[] page) {
        long[] entries = tables.get(gfn);
        if (entries == null) {
            vm.readPhysical(gfn * PAGE, page, 0, PAGE);
            return;
        }
        java.nio.ByteBuffer.wrap(page).order(java.nio.ByteOrder.LITTLE_ENDIAN).asLongBuffer().put(entries);
    }

    /** What the source side did. */
    static final class Sent {
        final List<MigrationReport.Round> rounds = new ArrayList<>();
        StopReason stopReason;
        long pages;
        long zeroPages;
        long bytes;
        long startedAt;
        long setupNanos;
        long pausedAt;
        double dirtyRate;
        double bandwidth;
        /** The auto-converge throttle when the VM paused (0: none). */
        int throttle;
        /** What XBZRLE did, null when it was off. */
        MigrationReport.Xbzrle xbzrle;
        /** When the last byte before the destination may resume went to the transport: the END, or post-copy's POSTCOPY. */
        long resumableAt;
        /** Post-copy: the frames the destination did not hold at the switch-over (null before it). */
        long[] remote;
    }

    /**
     * The source side: sends {@code vm} through {@code transport} up to the END record, leaving the VM
     * paused. On a failure before the END the dirty log is off and the VM runs again.
     */
    static Sent send(Vm vm, Transport transport, MigrationConfig config, Devices devices,
                     java.util.function.Consumer<MigrationReport.Round> progress) {
        if (vm.pagingMode() == PagingMode.PARAVIRTUAL
            && (config.mode() == MigrationConfig.Mode.POSTCOPY || config.mode() == MigrationConfig.Mode.HYBRID)) {
            throw new MigrationException("a PARAVIRTUAL VM migrates by pre-copy or stop-and-copy, as Xen migrates PV guests:"
                + " its page tables must all be on the destination, canonicalized and re-pinned, before it runs there");
        }
        Sent s = new Sent();
        s.startedAt = System.nanoTime();
        DirtyLog log = vm.dirtyLog();
        boolean logging = false;
        PageSender senderForAbort = null;
        try {
            StreamWriter out = new StreamWriter(transport);
            if (config.pageReferences() && transport.offerMemory(vm)) {
                out.references(vm); // in-process: the destination copies each page out of the VM itself
            }
            Pacer pacer = new Pacer(config.bandwidthBytesPerSecond());
            out.header(vm.config());
            PageSender pages = new PageSender(vm, out, pacer, config.xbzrleCacheBytes());
            senderForAbort = pages;
            if (config.channels() > 1) {
                pages.multifd(transport, config.channels());
            }
            long frames = vm.physicalMap().frames();
            if (config.mode() == MigrationConfig.Mode.POSTCOPY) {
                s.setupNanos = System.nanoTime() - s.startedAt;
                s.stopReason = StopReason.POST_COPY; // before the push: a paused post-copy's report says so too
                s.pausedAt = pause(vm);
                pages.round(0);
                long start = System.nanoTime();
                long n = postCopy(vm, out, transport, pages, null, null, s, devices, config);
                s.rounds.add(new MigrationReport.Round(0, n, 0, System.nanoTime() - start, 0, pacer.measured(), 0, true));
                progress.accept(s.rounds.get(0));
                s.stopReason = StopReason.POST_COPY;
                s.pages = pages.pages();
                s.zeroPages = pages.zeroPages();
                s.bytes = pages.bytes();
                s.bandwidth = pacer.measured();
                return s;
            } else if (config.mode() == MigrationConfig.Mode.STOPCOPY) {
                s.setupNanos = System.nanoTime() - s.startedAt;
                s.pausedAt = pause(vm);
                pages.round(0);
                long start = System.nanoTime();
                long n = pages.sendPopulated();
                s.rounds.add(new MigrationReport.Round(0, n, 0, System.nanoTime() - start, 0, pacer.measured(), 0, true));
                progress.accept(s.rounds.get(0));
                s.stopReason = StopReason.STOP_AND_COPY;
            } else {
                log.enable(config.tracking());
                logging = true;
                s.setupNanos = System.nanoTime() - s.startedAt;
                DirtySnapshot dirty = new DirtySnapshot(frames);
                AutoConverge autoConverge = new AutoConverge();
                long bytesBeforeRound = pages.bytes();
                int round = 0;
                pages.round(round);
                long roundStart = System.nanoTime();
                long n = pages.sendPopulated();
                pages.bulkDone();
                while (true) {
                    long dirtied = log.harvest(dirty);
                    long now = System.nanoTime();
                    s.dirtyRate = dirtied * (double) PAGE * 1e9 / Math.max(1, now - roundStart);
                    s.bandwidth = pacer.measured();
                    MigrationReport.Round done = new MigrationReport.Round(round, n, dirtied, now - roundStart, s.dirtyRate,
                        s.bandwidth, expectedDowntime(dirtied, s.bandwidth), false);
                    s.rounds.add(done);
                    progress.accept(done);
                    if (config.autoConverge()) {
                        autoConverge.afterRound(vm, dirtied * (long) PAGE, pages.bytes() - bytesBeforeRound);
                    }
                    bytesBeforeRound = pages.bytes();
                    StopReason stop = stopRule(config, round + 1, dirtied, pages.pagesSoFar(), frames, s.bandwidth);
                    if (stop != null) {
                        s.stopReason = stop;
                        break;
                    }
                    round++;
                    pages.round(round);
                    roundStart = System.nanoTime();
                    n = pages.sendDirty(dirty, null);
                }
                // Stop-and-copy: what the last harvest reported, and every write since.
                s.pausedAt = pause(vm);
                s.throttle = vm.throttlePercent();
                vm.setThrottle(0); // paused now; it stays unthrottled if the migration fails from here
                DirtySnapshot last = new DirtySnapshot(frames);
                log.harvest(last);
                log.disable();
                logging = false;
                round++;
                pages.round(round);
                long start = System.nanoTime();
                if (config.mode() == MigrationConfig.Mode.HYBRID) { // what is left goes after the switch-over
                    n = postCopy(vm, out, transport, pages, dirty, last, s, devices, config);
                    MigrationReport.Round push = new MigrationReport.Round(round, n, last.count(), System.nanoTime() - start,
                        s.dirtyRate, pacer.measured(), 0, true);
                    s.rounds.add(push);
                    progress.accept(push);
                    s.pages = pages.pages();
                    s.zeroPages = pages.zeroPages();
                    s.bytes = pages.bytes();
                    s.xbzrle = pages.xbzrle();
                    return s;
                }
                pages.lastStage();
                n = pages.sendDirty(dirty, null) + pages.sendDirty(last, dirty);
                MigrationReport.Round stopAndCopy = new MigrationReport.Round(round, n, last.count(), System.nanoTime() - start,
                    s.dirtyRate, pacer.measured(), 0, true);
                s.rounds.add(stopAndCopy);
                progress.accept(stopAndCopy);
            }
            pages.endChannels(); // the channels' pages all land before the vCPU state
            out.state(vm.exportState());
            out.devices(devices.saveAll());
            out.end();
            s.resumableAt = System.nanoTime();
            s.pages = pages.pages();
            s.zeroPages = pages.zeroPages();
            s.bytes = pages.bytes();
            s.xbzrle = pages.xbzrle();
            if (s.bandwidth == 0) {
                s.bandwidth = pacer.measured();
            }
            return s;
        } catch (RuntimeException e) {
            if (senderForAbort != null) {
                senderForAbort.abort("the source failed: " + e.getMessage());
            }
            if (logging) {
                log.disable();
            }
            if (vm.throttlePercent() != 0) {
                vm.setThrottle(0);
            }
            if (!(e instanceof PostCopyPausedException)) { // past post-copy's switch-over the VM may run there: stay paused
                resumeAfterFailure(vm, s.pausedAt);
            }
            throw e;
        }
    }

    /**
     * QEMU's auto-converge ({@code migration_trigger_throttle}, {@code mig_throttle_guest_down}): after a
     * harvest, when the guest dirtied more than half the bytes sent in that period ({@code
     * throttle-trigger-threshold} 50%) for the second time, throttle its vCPUs: 20% first
     * ({@code cpu-throttle-initial}), then 10% more ({@code cpu-throttle-increment}), at most 99%.
     */
    private static final class AutoConverge {
        private int high;

        void afterRound(Vm vm, long bytesDirtied, long bytesSent) {
            if (bytesDirtied * 2 > bytesSent && ++high >= 2) {
                high = 0;
                int now = vm.throttlePercent();
                vm.setThrottle(now == 0 ? 20 : Math.min(99, now + 10));
            }
        }
    }

    private static long pause(Vm vm) {
        long at = System.nanoTime();
        vm.pause();
        return at;
    }

    /**
     * Post-copy (Hines and Gopalan, VEE 2009; QEMU postcopy-ram), the VM paused: sends the vCPU state and
     * the bitmap of frames the destination does not hold yet, then the switch-over (the destination
     * resumes at once), then every one of those frames exactly once: those the destination asks for
     * over the return path first, the others pushed in frame order in between. A request for a frame
     * already sent flushes the chunk it may be waiting in. Ends with the END record. Returns the pages
     * sent. Pure post-copy ({@code dirty} null): every populated frame. Hybrid: the frames pre-copy's
     * last harvests ({@code dirty}, {@code last}) found written since they were sent; the destination
     * drops its stale copies of those (QEMU's postcopy discard), and a frame the guest discarded since
     * goes before the switch-over as a zero page.
     */
    private static long postCopy(Vm vm, StreamWriter out, Transport transport, PageSender pages, DirtySnapshot dirty,
                                 DirtySnapshot last, Sent s, Devices devices, MigrationConfig config) {
        pages.endChannels(); // post-copy goes on the main stream, after every channel's pages
        pages.postCopy();
        long frames = vm.physicalMap().frames();
        long[] remote = new long[(int) ((frames + 63) >>> 6)];
        long left = 0;
        long n = 0;
        for (long gfn = 0; gfn < frames; gfn++) {
            boolean wanted = dirty == null || dirty.isDirty(gfn) || last.isDirty(gfn);
            if (!wanted) {
                continue;
            }
            if (vm.physicalMap().hasContents(gfn)) { // populated, or on the host's swap (brought in when read)
                remote[(int) (gfn >>> 6)] |= 1L << gfn;
                left++;
            } else if (dirty != null) {
                pages.send(gfn); // not populated any more: the destination's copy becomes zeros
                n++;
            }
        }
        long[] sent = new long[remote.length];
        out.state(vm.exportState());
        out.devices(devices.saveAll());
        out.remote(remote);
        out.postcopy();
        s.resumableAt = System.nanoTime();
        s.remote = remote;
        try {
            n += push(out, transport, pages, remote, sent, frames, left);
        } catch (RuntimeException e) { // the destination may run the VM already: this copy stays, paused
            s.pages = pages.pages();
            s.zeroPages = pages.zeroPages();
            s.bytes = pages.bytes();
            throw new PostCopyPausedException("post-copy paused on the source (the VM may run on the destination; every frame"
                + " stays here until it confirms it has them): " + e.getMessage(), e, new PostCopyRecovery.Source(vm, remote, s,
                config));
        }
        return n;
    }

    /**
     * Post-copy's push: each frame set in {@code remote} and not in {@code done} exactly once, those the
     * destination asks for over the return path first (a request for one already sent flushes the chunk
     * it may wait in), the others in frame order in between; then the END record. Returns the pages sent.
     */
    static long push(StreamWriter out, Transport transport, PageSender pages, long[] remote, long[] done, long frames, long left) {
        long n = 0;
        long cursor = 0;
        while (left > 0) {
            boolean urgent = false;
            for (long req = transport.pollRequest(); req >= 0; req = transport.pollRequest()) {
                urgent = true;
                if (req < frames && (remote[(int) (req >>> 6)] & (1L << req)) != 0 && (done[(int) (req >>> 6)] & (1L << req)) == 0) {
                    done[(int) (req >>> 6)] |= 1L << req;
                    pages.send(req);
                    n++;
                    left--;
                }
            }
            if (urgent) {
                out.flush();
                continue;
            }
            while (cursor < frames && ((remote[(int) (cursor >>> 6)] & (1L << cursor)) == 0
                || (done[(int) (cursor >>> 6)] & (1L << cursor)) != 0)) {
                cursor++;
            }
            if (cursor < frames) {
                done[(int) (cursor >>> 6)] |= 1L << cursor;
                pages.send(cursor);
                n++;
                left--;
            }
        }
        out.end();
        return n;
    }

    /** The first stop rule that holds after the harvest that ended round {@code roundsDone - 1}, or null. */
    private static StopReason stopRule(MigrationConfig config, int roundsDone, long dirtied, long pagesSent, long frames,
                                       double bandwidth) {
        for (MigrationConfig.StopRule rule : MigrationConfig.StopRule.values()) {
            if (!config.stopRules().contains(rule)) {
                continue;
            }
            switch (rule) {
                case QEMU_DOWNTIME:
                    if (expectedDowntime(dirtied, bandwidth) < config.downtimeLimitNanos()) {
                        return StopReason.DOWNTIME_LIMIT;
                    }
                    break;
                case XEN_MAX_ROUNDS:
                    if (roundsDone >= config.maxRounds()) {
                        return StopReason.MAX_ROUNDS;
                    }
                    break;
                case XEN_FEW_DIRTY:
                    if (dirtied < XEN_FEW_DIRTY_PAGES) {
                        return StopReason.FEW_DIRTY_PAGES;
                    }
                    break;
                case XEN_SENT_3X:
                    if (pagesSent > 3 * frames) {
                        return StopReason.SENT_THREE_TIMES_MEMORY;
                    }
                    break;
                default:
                    throw new IllegalStateException(rule.name());
            }
        }
        return null;
    }

    /** The time {@code pages} would take at {@code bandwidth} bytes per second (QEMU's expected downtime). */
    static long expectedDowntime(long pages, double bandwidth) {
        return bandwidth > 0 ? (long) (pages * (double) PAGE / bandwidth * 1e9) : Long.MAX_VALUE;
    }

    /**
     * Sends pages of one VM into one stream: each is read once into a reusable buffer, a zero page goes
     * as a flag, and with XBZRLE on, a page re-sent after round 0 goes as a delta against the cached
     * copy sent before when that is smaller (QEMU's {@code save_xbzrle_page}: a page not cached goes
     * whole and is cached, except in the last stage; an unchanged page is not sent at all). Source
     * thread only.
     */
    static final class PageSender {
        private final Vm vm;
        private final StreamWriter out;
        private final Pacer pacer;
        private final byte[] page = new byte[PAGE];
        private final XbzrleCache cache;
        private final byte[] delta;
        /** Round 0 is done: XBZRLE applies (QEMU's {@code xbzrle_started}). */
        private boolean xbzrleStarted;
        /** Stop-and-copy: a page not cached is not cached any more (nothing will be re-sent). */
        private boolean lastStage;
        private long deltaPages;
        private long deltaBytes;
        private long cacheMisses;
        private long overflows;
        private long unchanged;
        /** The multifd channels while they run, else null. */
        private Multifd.Sender multifd;
        private long channelPages;
        private long channelZeroPages;
        private long channelBytes;
        /** Pages by reference waiting for their zero scan, done 64 at a time ({@link #sendBatch}). */
        private final long[] batch = new long[64];
        private int batched;

        PageSender(Vm vm, StreamWriter out, Pacer pacer, long xbzrleCacheBytes) {
            this.vm = vm;
            this.out = out;
            this.pacer = pacer;
            this.cache = xbzrleCacheBytes > 0 ? new XbzrleCache(xbzrleCacheBytes) : null;
            this.delta = cache != null ? new byte[PAGE] : null;
        }

        /** Pages go over {@code channels} multifd channels of {@code transport} from now on ({@link Multifd}). */
        void multifd(Transport transport, int channels) {
            multifd = new Multifd.Sender(vm, transport, out, channels, pacer);
        }

        /** A ROUND record; with multifd channels, a SYNC on each after the first round. */
        void round(int round) {
            out.round(round);
            if (multifd != null && round > 0) {
                multifd.sync(round);
            }
        }

        /** Ends the multifd channels, if any: every page sent so far has landed before the main stream goes on. */
        void endChannels() {
            if (multifd == null) {
                return;
            }
            multifd.end();
            channelPages = multifd.pages();
            channelZeroPages = multifd.zeroPages();
            channelBytes = multifd.bytes();
            multifd = null;
        }

        /** The migration failed: stops the channels' threads, if any. */
        void abort(String why) {
            if (multifd != null) {
                multifd.abort(why);
                multifd = null;
            }
        }

        /** Page records sent: in the main stream and (once ended) the channels. */
        long pages() {
            return out.pages() + channelPages;
        }

        long zeroPages() {
            return out.zeroPages() + channelZeroPages;
        }

        /** Stream bytes handed to the connections so far, the channels' included. */
        long bytes() {
            return out.bytes() + (multifd != null ? multifd.bytes() : channelBytes);
        }

        /** Pages sent or handed to a channel so far (for the stop rules, while channels run). */
        long pagesSoFar() {
            return out.pages() + (multifd != null ? multifd.dispatched() : channelPages);
        }

        /**
         * Post-copy: each page crosses once, whole (QEMU uses no XBZRLE in post-copy), in the stream (a page
         * the destination runs on is installed from the record itself, never by reference).
         */
        void postCopy() {
            sendBatch();
            xbzrleStarted = false;
            out.references(null);
        }

        /** Round 0 ended: re-sent pages may go as deltas from now on. */
        void bulkDone() {
            xbzrleStarted = cache != null;
        }

        void lastStage() {
            lastStage = true;
        }

        /** Round 0 and stop-and-copy alone: every populated page, on the link when this returns. */
        long sendPopulated() {
            long n = 0;
            for (long gfn = 0; gfn < vm.physicalMap().frames(); gfn++) {
                if (vm.physicalMap().hasContents(gfn) && send(gfn)) { // a swapped page is swapped in to be read
                    n++;
                }
            }
            sendBatch();
            drain();
            return n;
        }

        /** The pages {@code dirty} reports, except those {@code skip} reports (sent already), on the link when this returns. */
        long sendDirty(DirtySnapshot dirty, DirtySnapshot skip) {
            long n = 0;
            for (long gfn = dirty.next(0); gfn >= 0; gfn = dirty.next(gfn + 1)) {
                if ((skip == null || !skip.isDirty(gfn)) && send(gfn)) {
                    n++;
                }
            }
            sendBatch();
            drain();
            return n;
        }

        /** The pages by reference {@link #send} held back, scanned and in the stream. */
        private void sendBatch() {
            if (batched > 0) {
                int full = out.references(vm, batch, 0, batched);
                batched = 0;
                pacer.sent((long) full * PAGE);
            }
        }

        /** Waits for the multifd channels, if any, to send what they were handed. */
        private void drain() {
            if (multifd != null) {
                multifd.drain();
            }
        }

        /** Sends {@code gfn} as it is now; false when XBZRLE found it unchanged since its last copy. */
        boolean send(long gfn) {
            if (multifd != null) { // a channel reads and sends it (multifd goes without XBZRLE)
                multifd.page(gfn);
                return true;
            }
            if (!xbzrleStarted && out.byReference(vm)) { // its number only, after one zero scan per 64
                batch[batched++] = gfn;
                if (batched == batch.length) {
                    sendBatch();
                }
                return true;
            }
            if (!xbzrleStarted) { // straight from guest memory into the chunk
                boolean zero = out.page(vm, gfn);
                pacer.sent(zero ? 0 : PAGE);
                return true;
            }
            vm.readPhysical(gfn * PAGE, page, 0, PAGE);
            boolean zero = PageScan.isZero(page, 0);
            if (zero) {
                cache.zero(gfn);
            } else {
                int cached = cache.lookup(gfn);
                if (cached < 0) {
                    cacheMisses++;
                    if (!lastStage) {
                        cache.put(gfn, page);
                    }
                } else {
                    // A delta pays 2 bytes of length: it must be smaller than the page by more.
                    int length = Xbzrle.encode(cache.pages, cached, page, 0, delta, PAGE - 3);
                    if (length == 0) {
                        unchanged++;
                        return false;
                    }
                    cache.put(gfn, page);
                    if (length > 0) {
                        out.delta(gfn, delta, length);
                        pacer.sent(length);
                        deltaPages++;
                        deltaBytes += length;
                        return true;
                    }
                    overflows++;
                }
            }
            out.page(gfn, page, zero);
            pacer.sent(zero ? 0 : PAGE);
            return true;
        }

        /** What XBZRLE did, or null when it was off. */
        MigrationReport.Xbzrle xbzrle() {
            return cache == null ? null
                : new MigrationReport.Xbzrle(cache.pages.length, deltaPages, deltaBytes, cacheMisses, overflows, unchanged);
        }
    }

    /**
     * Holds the sender to a bandwidth cap (page payload bytes per second; 0 = unlimited) and measures
     * the bandwidth achieved over windows of at least 100 ms, as QEMU does for its downtime estimate.
     */
    static final class Pacer {
        private final long cap;
        private final long start = System.nanoTime();
        private long sent;
        private long windowStart = start;
        private long windowBytes;
        /** Bytes since the clock was last read (uncapped: it is read once per {@link #CLOCK_EVERY}, not per page). */
        private long unclocked;
        private double measured;
        /** Uncapped, the window is checked after this many bytes: a clock read per 4 KiB page cost 25 ns here, 6% of a page's copy. */
        private static final long CLOCK_EVERY = 256 << 10;

        Pacer(long bytesPerSecond) {
            this.cap = bytesPerSecond;
        }

        /** The migration thread's pages (one stream: no lock per page); ahead of the cap it waits here. */
        void sent(long bytes) {
            sent += bytes;
            windowBytes += bytes;
            if (cap == 0) {
                unclocked += bytes;
                if (unclocked < CLOCK_EVERY) {
                    return;
                }
                unclocked = 0;
            } else {
                long due = start + (long) (sent * 1e9 / cap);
                long wait = due - System.nanoTime();
                if (wait > 0) {
                    java.util.concurrent.locks.LockSupport.parkNanos(wait);
                }
            }
            long now = System.nanoTime();
            if (now - windowStart >= BANDWIDTH_WINDOW_NANOS) {
                measured = windowBytes * 1e9 / (now - windowStart);
                windowStart = now;
                windowBytes = 0;
            }
        }

        /**
         * A multifd channel's batch: the channels share the link, and one at a time counts here (while
         * channels run, the migration thread sends no page itself; it ends them before it does).
         */
        synchronized void sentShared(long bytes) {
            sent(bytes);
        }

        /** The bandwidth of the last full window, or of everything so far before one has passed (any thread). */
        synchronized double measured() {
            if (measured > 0) {
                return measured;
            }
            long elapsed = System.nanoTime() - start;
            return elapsed > 0 ? sent * 1e9 / elapsed : 0;
        }
    }
}
