package io.vmpage.bench.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.vmpage.engine.Host;
import io.vmpage.engine.PagingMode;
import io.vmpage.engine.dirty.DirtyTracking;
import io.vmpage.engine.guest.GuestKernel;
import io.vmpage.migration.DirtyRate;
import io.vmpage.migration.Migration;
import io.vmpage.migration.MigrationConfig;
import io.vmpage.migration.MemoryTransport;
import io.vmpage.migration.MigrationException;
import io.vmpage.migration.PostCopyPausedException;
import io.vmpage.migration.RemoteMigration;
import io.vmpage.migration.MigrationReport;
import io.vmpage.migration.TcpTransport;
import io.vmpage.migration.Workload;
import java.io.IOException;
import java.io.PrintWriter;
import java.net.InetSocketAddress;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.EnumSet;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.concurrent.atomic.AtomicReference;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code vmpage migrate}: live migration of a VM whose writer vCPUs keep writing, from one host to
 * another in this process. The guest kernel model runs in the VM with its heap populated; one writer
 * thread per vCPU writes it by a pattern, paced to a dirty rate; the source first measures that rate
 * and predicts whether pre-copy converges under the bandwidth and downtime limit, then migrates with
 * one progress line per round (as QEMU's {@code info migrate}), verifies the destination against the
 * paused source page by page, switches over, lets the writers carry on on the destination, and checks
 * every value they wrote. Exit 0 when verified, 1 when a page differs or a write is missing. With
 * {@code --plot FILE.png} it also draws the pages sent and dirtied per round and the downtime
 * ({@link MigrationPlot}).
 */
@Command(name = "migrate", mixinStandardHelpOptions = true,
    description = "Live-migrates a VM while its vCPUs keep writing (pre-copy, stop-and-copy, post-copy or hybrid) and verifies the copy.")
public final class MigrateCommand implements Callable<Integer> {
    private static final ObjectMapper JSON = new ObjectMapper();
    /** Guest memory the guest kernel keeps besides the heap (its tables and direct-map bookkeeping). */
    private static final long KERNEL_BYTES = 32L << 20;
    private static final long MIN_MEMORY = 64L << 20;
    private static final long MAX_MEMORY = 16L << 30;

    @Spec
    CommandSpec spec;

    @Option(names = "--memory", paramLabel = "SIZE", defaultValue = "256m",
        description = "Guest memory, 64m to 16g; all but 32 MiB is heap, written once before the migration, unless --heap"
            + " says less. Default: ${DEFAULT-VALUE}.")
    String memory;

    @Option(names = "--heap", paramLabel = "SIZE",
        description = "Guest memory the guest kernel maps and writes before the migration (4k per writer up to --memory"
            + " less 32m); the rest is never touched, and a migration sends none of it. Default: all of it.")
    String heap;

    @Option(names = "--paging", paramLabel = "MODE", defaultValue = "nested",
        description = "nested, shadow or pv (Xen PV: pre-copy and stop-and-copy). Default: ${DEFAULT-VALUE}.")
    String paging;

    @Option(names = "--writers", paramLabel = "N", defaultValue = "2", description = "Writer vCPUs, 1 to 16. Default: ${DEFAULT-VALUE}.")
    int writers;

    @Option(names = "--pattern", paramLabel = "PATTERN", defaultValue = "hotset",
        description = "uniform, hotset, zipf or sequential. Default: ${DEFAULT-VALUE}.")
    String pattern;

    @Option(names = "--wws", paramLabel = "SIZE",
        description = "The hot set (writable working set) of --pattern hotset. Default: 32m, or the heap when it is smaller.")
    String wws;

    @Option(names = "--dirty-rate", paramLabel = "RATE", defaultValue = "32m",
        description = "Page writes per second over all writers, in bytes (e.g. 32m); unlimited: as fast as they can. Default: ${DEFAULT-VALUE}.")
    String dirtyRate;

    @Option(names = "--mode", paramLabel = "MODE", defaultValue = "precopy",
        description = "precopy, stopcopy, postcopy or hybrid (pre-copy rounds, then post-copy). Default: ${DEFAULT-VALUE}.")
    String mode;

    @Option(names = "--bandwidth", paramLabel = "RATE", defaultValue = "64m",
        description = "Page payload per second on the link, or unlimited. Default: ${DEFAULT-VALUE}.")
    String bandwidth;

    @Option(names = "--downtime-limit", paramLabel = "DURATION", defaultValue = "300ms",
        description = "QEMU's downtime limit (ms or s). Default: ${DEFAULT-VALUE}.")
    String downtimeLimit;

    @Option(names = "--max-rounds", paramLabel = "N", defaultValue = "30", description = "Xen's round cap. Default: ${DEFAULT-VALUE}.")
    int maxRounds;

    @Option(names = "--auto-converge", description = "QEMU's auto-converge: throttle the vCPUs while they dirty faster than the link carries.")
    boolean autoConverge;

    @Option(names = "--xbzrle", description = "QEMU's XBZRLE: pages re-sent after round 0 go as deltas against a cache of what was sent.")
    boolean xbzrle;

    @Option(names = "--xbzrle-cache", paramLabel = "SIZE", defaultValue = "64m",
        description = "XBZRLE's cache, 4k to 1g (QEMU's xbzrle-cache-size). Default: ${DEFAULT-VALUE}.")
    String xbzrleCache;

    @Option(names = "--channels", paramLabel = "N", arity = "0..1", fallbackValue = "" + MigrationConfig.MULTIFD_DEFAULT_CHANNELS,
        description = "QEMU's multifd: pages go over N parallel channels, each its own connection with a thread at each end,"
            + " 1 to " + MigrationConfig.MAX_CHANNELS + "; --channels alone is 2 (QEMU's multifd-channels). Default: 1, all on"
            + " the main stream (multifd is off by default in QEMU too).")
    Integer channels;

    /** The channels this run uses (--channels, or its default for the mode). */
    private int channelCount;

    @Option(names = "--method", paramLabel = "METHOD", defaultValue = "write-protect",
        description = "Dirty log: write-protect, dirty-bits (nested only) or dirty-ring. Default: ${DEFAULT-VALUE}.")
    String method;

    @Option(names = "--transport", paramLabel = "KIND", defaultValue = "memory",
        description = "memory (a queue between two hosts in this process) or tcp (QEMU's tcp: migration to a 'vmpage host'"
            + " process: the one --to names, or a child started on a loopback port). Default: ${DEFAULT-VALUE}.")
    String transport;

    @Option(names = "--to", paramLabel = "HOST:PORT",
        description = "Migrate to a destination process ('vmpage host --listen PORT') there, over TCP (implies --transport tcp).")
    String to;

    @Option(names = "--seed", paramLabel = "N", defaultValue = "1", description = "Seed of the writers. Default: ${DEFAULT-VALUE}.")
    long seed;

    @Option(names = "--json", arity = "0..1", fallbackValue = "-", paramLabel = "FILE",
        description = "Write the result as one JSON object to FILE, or to stdout when FILE is omitted or '-'.")
    String json;

    @Option(names = "--plot", paramLabel = "FILE.png",
        description = "Write a PNG chart of the pages sent and dirtied per round and the downtime to FILE.png.")
    String plot;

    @Override
    public Integer call() throws Exception {
        PagingMode pagingMode = Cli.pagingMode(paging);
        MigrationConfig.Mode algorithm = switch (mode) {
            case "precopy" -> MigrationConfig.Mode.PRECOPY;
            case "stopcopy" -> MigrationConfig.Mode.STOPCOPY;
            case "postcopy" -> MigrationConfig.Mode.POSTCOPY;
            case "hybrid" -> MigrationConfig.Mode.HYBRID;
            default -> throw new Cli.UsageException("--mode " + mode + " must be precopy, stopcopy, postcopy or hybrid");
        };
        if (pagingMode == PagingMode.PARAVIRTUAL
            && (algorithm == MigrationConfig.Mode.POSTCOPY || algorithm == MigrationConfig.Mode.HYBRID)) {
            throw new Cli.UsageException("--paging pv --mode " + mode + ": a paravirtual VM migrates by precopy or stopcopy,"
                + " as Xen migrates PV guests (its page tables must be restored and pinned before it runs)");
        }
        if (!transport.equals("memory") && !transport.equals("tcp")) {
            throw new Cli.UsageException("--transport " + transport + " must be memory or tcp");
        }
        InetSocketAddress destinationAddress = to == null ? null : address("--to", to, false);
        boolean remote = destinationAddress != null || transport.equals("tcp");
        Workload.Pattern writePattern = switch (pattern) {
            case "uniform" -> Workload.Pattern.UNIFORM;
            case "hotset" -> Workload.Pattern.HOTSET;
            case "zipf" -> Workload.Pattern.ZIPF;
            case "sequential" -> Workload.Pattern.SEQUENTIAL;
            default -> throw new Cli.UsageException("--pattern " + pattern + " must be uniform, hotset, zipf or sequential");
        };
        DirtyTracking how = Cli.tracking(method, pagingMode);
        if (writers < 1 || writers > 16) {
            throw new Cli.UsageException("--writers " + writers + " must be between 1 and 16");
        }
        if (maxRounds < 1 || maxRounds > 10_000) {
            throw new Cli.UsageException("--max-rounds " + maxRounds + " must be between 1 and 10000");
        }
        long memoryBytes = Units.parseSize("--memory", memory, MIN_MEMORY, MAX_MEMORY);
        if ((memoryBytes & 0xFFF) != 0) {
            throw new Cli.UsageException("--memory " + memory + " must be a whole number of 4 KiB pages");
        }
        long heapBytes = heap == null ? memoryBytes - KERNEL_BYTES
            : Units.parseSize("--heap", heap, 4096L * writers, memoryBytes - KERNEL_BYTES);
        if ((heapBytes & 0xFFF) != 0) {
            throw new Cli.UsageException("--heap " + heap + " must be a whole number of 4 KiB pages");
        }
        int heapPages = (int) (heapBytes >>> 12);
        long wwsBytes = wws == null ? Math.min(32L << 20, heapBytes) : Units.parseSize("--wws", wws, 4096L * writers, heapBytes);
        long rate = rate("--dirty-rate", dirtyRate);
        long link = rate("--bandwidth", bandwidth);
        long limit = duration("--downtime-limit", downtimeLimit);
        if (limit < 1_000_000L || limit > 60_000_000_000L) {
            throw new Cli.UsageException("--downtime-limit " + downtimeLimit + " must be between 1ms and 60s");
        }
        Path plotFile = plot == null ? null : Cli.plotFile(plot);
        long touched = heapBytes + KERNEL_BYTES; // the guest's populated memory; each host's frame table besides
        long tables = (memoryBytes + memoryBytes / 8 + (64L << 20)) / 4096 * 16;
        String refusal = HostRam.shortfall(asked(), 2 * (touched + tables) + (512L << 20), HostRam.available(),
            "the source and the destination guest, both populated");
        if (refusal != null) {
            throw new Cli.UsageException(refusal);
        }
        long cacheBytes = Units.parseSize("--xbzrle-cache", xbzrleCache, 4096, 1L << 30);
        if (xbzrle && algorithm != MigrationConfig.Mode.PRECOPY && algorithm != MigrationConfig.Mode.HYBRID) {
            throw new Cli.UsageException("--xbzrle: deltas are for pages pre-copy sends again; --mode " + mode + " sends each page once");
        }
        channelCount = channels != null ? channels : 1;
        if (channelCount < 1 || channelCount > MigrationConfig.MAX_CHANNELS) {
            throw new Cli.UsageException("--channels " + channelCount + " must be between 1 and " + MigrationConfig.MAX_CHANNELS);
        }
        if (channelCount > 1 && xbzrle) {
            throw new Cli.UsageException("--channels " + channelCount + ": multifd does not go with --xbzrle (QEMU refuses them"
                + " together); use --channels 1");
        }
        if (channelCount > 1 && algorithm == MigrationConfig.Mode.POSTCOPY) {
            throw new Cli.UsageException("--channels " + channelCount + ": post-copy sends every page on the main stream;"
                + " multifd is for pre-copy (--mode hybrid pre-copies over the channels)");
        }
        MigrationConfig config = new MigrationConfig(algorithm, link, limit, maxRounds,
            EnumSet.of(MigrationConfig.StopRule.QEMU_DOWNTIME, MigrationConfig.StopRule.XEN_MAX_ROUNDS), how, autoConverge,
            xbzrle ? cacheBytes : 0, true, channelCount, true);
        PrintWriter out = spec.commandLine().getOut();
        PrintWriter progress = json != null && json.equals("-") ? spec.commandLine().getErr() : out;
        long hostBytes = memoryBytes + memoryBytes / 8 + (64L << 20);
        try (Host source = Cli.createHost(hostBytes, asked())) {
            Workload workload = new Workload(source, pagingMode, writers, memoryBytes, heapPages, writePattern,
                (int) (wwsBytes >>> 12), rate);
            try (workload) {
                workload.start(true, seed);
                workload.awaitWrites(100);
                DirtyRate measured = DirtyRate.measure(workload.vm(), how, Math.max(limit, 100_000_000L));
                boolean predicted = measured.predictsConvergence(link, limit);
                progress.printf(Locale.ROOT, "dirty rate %s/s before the migration (%d pages in %.0f ms): pre-copy %s converge"
                    + " at %s within %.0f ms%n", mib(measured.bytesPerSecond()), measured.pages(),
                    measured.nanos() / 1e6, predicted ? "should" : "should not", link == 0 ? "unlimited bandwidth"
                        : mib(link) + "/s", limit / 1e6);
                progress.flush();
                if (remote) {
                    return toProcess(workload, destinationAddress, config, hostBytes, progress, out, plotFile, measured, predicted);
                }
                Migration.Result result;
                AtomicReference<GuestKernel> kernelThere = new AtomicReference<>();
                try (Host destination = Cli.createHost(hostBytes, asked()); MemoryTransport connection = new MemoryTransport()) {
                    result = Migration.toHost(workload.vm(), destination, connection, config, workload.devices(kernelThere),
                        rounds(progress, algorithm), running -> {
                            workload.follow(running); // the writers carry on on the destination...
                            workload.vm().retireVcpus(); // ...as soon as their source vCPUs are gone
                        });
                    return finishInProcess(workload, source, result, kernelThere.get(), out, plotFile, measured, predicted);
                }
            }
        }
    }

    /** The in-process migration's end: the writers carry on on the destination, then every check and the report. */
    private int finishInProcess(Workload workload, Host source, Migration.Result result, GuestKernel kernelThere, PrintWriter out,
                                Path plotFile, DirtyRate measured, boolean predicted) throws InterruptedException {
        int freeHere = workload.kernel().freeFrameCount();
        source.destroyVm(workload.vm());
        long before = workload.writesOnFollowedVm();
        workload.awaitWrites(100);
        workload.stop();
        long missing = workload.journalMismatches(result.destination());
        MigrationReport report = result.report();
        String after = String.format(Locale.ROOT, "%d writes on the destination after the switch-over, %d journaled writes missing;"
            + " guest kernel state moved as device state: %d free guest frames at the source, %s on the destination",
            workload.writesOnFollowedVm() - before, missing, freeHere, kernelThere == null ? "no kernel" : kernelThere.freeFrameCount());
        return finish(report, out, plotFile, measured, predicted, missing, after);
    }

    /**
     * Migration to another process ({@code --to}, or {@code --transport tcp}: a {@code vmpage host} child on
     * a loopback port): verified from the destination's page hashes ({@link RemoteMigration}). The
     * writers' journal cannot be read across processes: the hashes compare every page instead.
     */
    private int toProcess(Workload workload, InetSocketAddress at, MigrationConfig config, long hostBytes, PrintWriter progress,
                          PrintWriter out, Path plotFile, DirtyRate measured, boolean predicted) throws InterruptedException {
        DestinationProcess child = at == null ? DestinationProcess.start(hostBytes, 200) : null;
        try {
            InetSocketAddress address = at != null ? at : child.address();
            if (child != null) {
                progress.printf(Locale.ROOT, "destination: vmpage host, process %d, listening on %s:%d%n", child.pid(),
                    address.getHostString(), address.getPort());
                progress.flush();
            }
            MigrationReport report;
            TcpTransport link;
            try {
                link = TcpTransport.connect(address, MemoryTransport.DEFAULT_CHUNK, 10_000);
            } catch (MigrationException e) {
                throw new Cli.UsageException((to != null ? "--to " + to : "--transport tcp") + ": " + e.getMessage());
            }
            try {
                try (link) {
                    report = RemoteMigration.send(workload.vm(), link, config, workload.devices(new AtomicReference<>()),
                        rounds(progress, config.mode()));
                } catch (PostCopyPausedException paused) {
                    report = recoverPostCopy(paused, address, progress);
                }
            } catch (MigrationException e) {
                spec.commandLine().getErr().println("vmpage: migration failed: " + e.getMessage()
                    + (workload.vm().paused() ? " (the source stays paused: the destination may be running the VM)"
                        : " (the VM runs on at the source)"));
                return Cli.VERIFICATION_FAILED;
            }
            workload.vm().retireVcpus(); // the VM runs there now: the source's writers stop here
            workload.stop();
            String after = "writes journal not compared across processes (every page was, by hash)";
            if (child != null) {
                int exit = child.await(60_000);
                String said = child.output().strip().replace(System.lineSeparator(), System.lineSeparator() + "    ");
                after += String.format(Locale.ROOT, "%n  destination process exited %d:%n    %s", exit, said);
                if (exit != 0) {
                    spec.commandLine().getErr().println("vmpage: the destination process failed (exit " + exit + "): " + said);
                    return Cli.VERIFICATION_FAILED;
                }
            }
            return finish(report, out, plotFile, measured, predicted, -1, after);
        } finally {
            if (child != null) {
                child.close();
            }
        }
    }

    /** How long a post-copy whose connection was lost keeps trying to reconnect to the destination. */
    static final long RECOVER_NANOS = 60_000_000_000L;

    /**
     * QEMU's postcopy recovery, done by the source on its own: the connection was lost after the
     * switch-over, so the destination runs the VM on the pages it has (and waits for the source, as
     * {@code vmpage host} does) while the source keeps every page; the source reconnects to the same
     * address, every 200 ms for up to {@link #RECOVER_NANOS}, sends what the destination still lacks and
     * verifies its hashes. A connection lost again is recovered the same way.
     *
     * @throws MigrationException when no connection recovered it in time (nothing is lost: both sides wait)
     */
    private MigrationReport recoverPostCopy(PostCopyPausedException paused, InetSocketAddress address, PrintWriter progress)
        throws InterruptedException {
        long deadline = System.nanoTime() + RECOVER_NANOS;
        PostCopyPausedException last = paused;
        boolean lost = true;
        while (true) {
            if (lost) {
                progress.printf(Locale.ROOT, "post-copy paused: %s; reconnecting to %s:%d (the destination runs on the pages it has,"
                    + " the source keeps the rest)%n", last.getMessage(), address.getHostString(), address.getPort());
                progress.flush();
            }
            MigrationException failure = null;
            TcpTransport connection = null;
            try {
                connection = TcpTransport.connect(address, MemoryTransport.DEFAULT_CHUNK, 10_000);
            } catch (MigrationException noConnection) {
                failure = noConnection;
                lost = false;
            }
            if (connection != null) {
                try (TcpTransport fresh = connection) { // a failure but a lost connection is the migration's own: not retried
                    MigrationReport report = RemoteMigration.recover(last, fresh);
                    progress.println("post-copy recovered");
                    progress.flush();
                    return report;
                } catch (PostCopyPausedException again) {
                    last = again;
                    failure = again;
                    lost = true;
                }
            }
            if (System.nanoTime() - deadline > 0) {
                throw new MigrationException("post-copy paused and not recovered within " + RECOVER_NANOS / 1_000_000_000L
                    + " s (" + failure.getMessage() + "); the source keeps every page the destination lacks", failure);
            }
            Thread.sleep(200);
        }
    }

    /** The plot, the report, and the exit code; {@code missing} -1 when the journal was not checked. */
    private int finish(MigrationReport report, PrintWriter out, Path plotFile, DirtyRate measured, boolean predicted,
                       long missing, String after) {
        boolean converged = report.stopReason() != io.vmpage.migration.StopReason.MAX_ROUNDS
            && report.stopReason() != io.vmpage.migration.StopReason.FEW_DIRTY_PAGES
            && report.stopReason() != io.vmpage.migration.StopReason.SENT_THREE_TIMES_MEMORY;
        if (plotFile != null) {
            try {
                MigrationPlot.write(report, plotFile);
            } catch (IOException | RuntimeException e) { // as Cli.emit for an unwritable --json FILE
                throw new Cli.UsageException("cannot write " + plot + ": " + why(e));
            }
        }
        Cli.emit(out, json, () -> json(report, measured, predicted, converged, missing),
            () -> text(report, measured, predicted, converged, after));
        if (!report.verified() || missing > 0) {
            spec.commandLine().getErr().println("vmpage: migration lost data: " + report.mismatchedPages()
                + " pages differ from the paused source" + (missing >= 0 ? ", " + missing + " journaled writes missing on the destination" : ""));
            return Cli.VERIFICATION_FAILED;
        }
        return Cli.OK;
    }

    /** One progress line per round, as QEMU's {@code info migrate}. */
    private static java.util.function.Consumer<MigrationReport.Round> rounds(PrintWriter progress, MigrationConfig.Mode algorithm) {
        return r -> {
            if (r.sourcePaused()) {
                progress.printf(Locale.ROOT, "round %d (%s): sent %d pages (%s) in %.0f ms%n", r.round(),
                    algorithm == MigrationConfig.Mode.POSTCOPY || algorithm == MigrationConfig.Mode.HYBRID
                        ? "post-copy, the destination running"
                        : "stop-and-copy, paused", r.pagesSent(), mib(r.pagesSent() * 4096.0), r.nanos() / 1e6);
            } else {
                progress.printf(Locale.ROOT, "round %d: sent %d pages (%s) in %.0f ms; remaining %d pages (%s), dirty rate"
                        + " %s/s, bandwidth %s/s, expected downtime %s%n", r.round(), r.pagesSent(), mib(r.pagesSent() * 4096.0),
                    r.nanos() / 1e6, r.pagesDirtied(), mib(r.pagesDirtied() * 4096.0), mib(r.dirtyRateBytesPerSecond()),
                    mib(r.bandwidthBytesPerSecond()), r.expectedDowntimeNanos() == Long.MAX_VALUE ? "-"
                        : String.format(Locale.ROOT, "%.0f ms", r.expectedDowntimeNanos() / 1e6));
            }
            progress.flush();
        };
    }

    /**
     * {@code HOST:PORT} ({@code --to}) or {@code [ADDR:]PORT} ({@code --listen}, {@code optionalHost}: ADDR
     * defaults to 127.0.0.1 and PORT may be 0).
     */
    static InetSocketAddress address(String option, String text, boolean optionalHost) {
        int colon = text.lastIndexOf(':');
        String host = colon < 0 ? (optionalHost ? "127.0.0.1" : "") : text.substring(0, colon);
        if (host.startsWith("[") && host.endsWith("]")) {
            host = host.substring(1, host.length() - 1); // [::1]:4444
        }
        if (host.isEmpty()) {
            throw new Cli.UsageException(option + " " + text + " must be HOST:PORT");
        }
        int port;
        try {
            port = Integer.parseInt(text.substring(colon + 1));
        } catch (NumberFormatException e) {
            port = -1;
        }
        if (port < (optionalHost ? 0 : 1) || port > 65535) {
            throw new Cli.UsageException(option + " " + text + ": the port must be a number from " + (optionalHost ? 0 : 1)
                + " to 65535");
        }
        InetSocketAddress address = new InetSocketAddress(host, port);
        if (address.isUnresolved()) {
            throw new Cli.UsageException(option + " " + text + ": unknown host " + host);
        }
        return address;
    }

    /** Why a write failed, in words: a FileSystemException's message is often its path alone. */
    private static String why(Exception e) {
        if (e instanceof FileSystemException f) {
            if (f.getReason() != null) {
                return f.getReason();
            }
            return f instanceof NoSuchFileException ? "no such file or directory"
                : f instanceof AccessDeniedException ? "permission denied" : f.getClass().getSimpleName();
        }
        return e.getMessage() != null ? e.getMessage() : e.getClass().getSimpleName();
    }

    private static String mib(double bytes) {
        return String.format(Locale.ROOT, "%.1f MiB", bytes / (1 << 20));
    }

    private String asked() {
        return "--memory " + memory + (heap != null ? " --heap " + heap : "");
    }

    private static long rate(String option, String text) {
        if (text.equalsIgnoreCase("unlimited")) {
            return 0;
        }
        try {
            long r = Units.parseRate(text);
            if (r <= 0) {
                throw new Cli.UsageException(option + " " + text + " must be positive, or unlimited");
            }
            return r;
        } catch (IllegalArgumentException e) {
            throw new Cli.UsageException(option + " " + text + ": " + e.getMessage());
        }
    }

    /** A duration flag's value in nanoseconds (ms, s, ...; never negative), or a usage error naming it. */
    static long duration(String option, String text) {
        try {
            return Units.parseDurationNanos(text);
        } catch (IllegalArgumentException e) {
            throw new Cli.UsageException(option + " " + text + ": " + e.getMessage());
        }
    }

    private String text(MigrationReport r, DirtyRate measured, boolean predicted, boolean converged, String after) {
        StringBuilder b = new StringBuilder();
        b.append(String.format(Locale.ROOT, "%s migration of a %s %s guest with %d writers (%s, %s), %s%n",
            r.mode().name().toLowerCase(Locale.ROOT), Units.formatSize(r.memoryBytes()), r.paging().toLowerCase(Locale.ROOT), writers,
            pattern, method, channelCount > 1 ? channelCount + " multifd channels" : "one stream"));
        b.append(String.format(Locale.ROOT, "  rounds %d, stopped by %s%n", r.rounds(), r.stopReason()));
        b.append(String.format(Locale.ROOT, "  sent %d pages (%d zero), %s on the link%n", r.pagesSent(), r.zeroPages(),
            mib(r.bytesSent())));
        b.append(String.format(Locale.ROOT, "  setup %.1f ms, total %.1f ms, downtime %.1f ms%n", r.setupNanos() / 1e6,
            r.totalNanos() / 1e6, r.downtimeNanos() / 1e6));
        b.append(String.format(Locale.ROOT, "  dirty rate %s/s (measured before: %s/s), bandwidth %s/s%n",
            mib(r.dirtyRateBytesPerSecond()), mib(measured.bytesPerSecond()), mib(r.bandwidthBytesPerSecond())));
        b.append(String.format(Locale.ROOT, "  predicted to converge: %s; converged: %s%s%n", predicted, converged,
            r.throttlePercent() > 0 ? " (auto-converge throttled the vCPUs to " + r.throttlePercent() + "%)" : ""));
        if (r.postCopy() != null) {
            b.append(String.format(Locale.ROOT, "  post-copy: %d pages pulled by faults (latency p50 %d us, p99 %d us, max %d us),"
                + " %d pushed in all%n", r.postCopy().faults(), r.postCopy().p50Micros(), r.postCopy().p99Micros(),
                r.postCopy().maxMicros(), r.postCopy().pagesPushed()));
        }
        if (r.xbzrle() != null) {
            MigrationReport.Xbzrle x = r.xbzrle();
            b.append(String.format(Locale.ROOT, "  xbzrle: %d pages as deltas (%s, encoding rate %.1f), %d cache misses,"
                + " %d overflows, %d unchanged pages not sent (cache %s)%n", x.pages(), mib(x.bytes()), x.encodingRate(),
                x.cacheMisses(), x.overflows(), x.unchanged(), Units.formatSize(x.cacheBytes())));
        }
        b.append(String.format(Locale.ROOT, "  verified: %s (%d pages differ from the paused source); %s%n", r.verified(),
            r.mismatchedPages(), after));
        if (plot != null) {
            b.append("  plot: ").append(plot).append(System.lineSeparator());
        }
        return b.toString();
    }

    private String json(MigrationReport r, DirtyRate measured, boolean predicted, boolean converged, long missing) {
        ObjectNode o = JSON.createObjectNode();
        o.put("mode", r.mode().name().toLowerCase(Locale.ROOT));
        o.put("paging", paging); // as the flag names it: nested, shadow or pv
        o.put("memory_bytes", r.memoryBytes());
        o.put("writers", writers);
        o.put("pattern", pattern);
        o.put("transport", to != null ? "tcp" : transport);
        o.put("channels", channelCount);
        if (to != null) {
            o.put("to", to);
        }
        o.put("downtime_ms", r.downtimeNanos() / 1e6);
        o.put("total_ms", r.totalNanos() / 1e6);
        o.put("setup_ms", r.setupNanos() / 1e6);
        o.put("rounds", r.rounds());
        o.put("stop_reason", r.stopReason().name().toLowerCase(Locale.ROOT));
        o.put("pages_sent", r.pagesSent());
        o.put("bytes_sent", r.bytesSent());
        o.put("zero_pages", r.zeroPages());
        o.put("dirty_rate_bytes_per_s", r.dirtyRateBytesPerSecond());
        o.put("dirty_rate_before_bytes_per_s", measured.bytesPerSecond());
        o.put("bandwidth_bytes_per_s", r.bandwidthBytesPerSecond());
        o.put("predicted_converge", predicted);
        o.put("converged", converged);
        o.put("throttle_percent", r.throttlePercent());
        ArrayNode rounds = o.putArray("per_round");
        for (MigrationReport.Round round : r.perRound()) {
            ObjectNode n = rounds.addObject();
            n.put("round", round.round());
            n.put("pages_sent", round.pagesSent());
            n.put("pages_dirtied", round.pagesDirtied());
            n.put("ms", round.nanos() / 1e6);
        }
        if (r.postCopy() != null) {
            o.put("postcopy_faults", r.postCopy().faults());
            ObjectNode latency = o.putObject("postcopy_fault_latency_us");
            latency.put("p50", r.postCopy().p50Micros());
            latency.put("p99", r.postCopy().p99Micros());
            latency.put("max", r.postCopy().maxMicros());
        }
        if (r.xbzrle() != null) {
            MigrationReport.Xbzrle x = r.xbzrle();
            ObjectNode n = o.putObject("xbzrle");
            n.put("cache_bytes", x.cacheBytes());
            n.put("pages", x.pages());
            n.put("bytes", x.bytes());
            n.put("cache_misses", x.cacheMisses());
            n.put("overflows", x.overflows());
            n.put("unchanged_pages", x.unchanged());
            n.put("encoding_rate", x.encodingRate());
        }
        o.put("verified", r.verified() && missing <= 0);
        o.put("mismatched_pages", r.mismatchedPages());
        if (missing >= 0) {
            o.put("missing_writes", missing);
        } else {
            o.putNull("missing_writes"); // across processes: every page compared by hash instead
        }
        return o.toString();
    }
}
