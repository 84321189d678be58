package io.vmpage.migration;

import io.vmpage.engine.Vm;

/**
 * The source's half of QEMU's postcopy recovery. After a connection lost past the switch-over the
 * source stays paused with every frame ({@link Source}); on a new connection it waits for the
 * destination's bitmap of the remote frames it holds (QEMU's {@code MIG_RP_MSG_RECV_BITMAP}) and sends
 * the others, each once, those a destination vCPU waits for first ({@link Migration#push}): a
 * RECOVER record, their PAGE records, END ({@link StreamFormat}).
 */
final class PostCopyRecovery {
    /** How long the source waits for the destination's bitmap on the new connection. */
    private static final long BITMAP_MILLIS = 60_000;

    private PostCopyRecovery() {
    }

    /** A paused post-copy's source: the VM (paused), the frames the destination lacked at the switch-over, what was sent. */
    record Source(Vm vm, long[] remote, Migration.Sent sent, MigrationConfig config) {
    }

    /**
     * Sends over {@code fresh} every remote frame the destination's bitmap does not have; returns how
     * many. Adds them to the migration's counts, and the push as a round to its report.
     *
     * @throws PostCopyPausedException when this connection fails too (the source stays as it was)
     */
    static long resume(Source src, Transport fresh) {
        try {
            long frames = src.vm().physicalMap().frames();
            long[] remote = src.remote();
            long[] have = fresh.awaitReply(BITMAP_MILLIS);
            if (have.length != 1 + remote.length || have[0] != frames) {
                throw new MigrationException("the destination's bitmap of received frames has " + have.length + " words for a VM of "
                    + frames + " frames");
            }
            long[] done = new long[remote.length];
            long left = 0;
            for (int i = 0; i < remote.length; i++) {
                done[i] = have[1 + i] & remote[i];
                left += Long.bitCount(remote[i] & ~done[i]);
            }
            StreamWriter out = new StreamWriter(fresh);
            out.recover();
            Migration.Pacer pacer = new Migration.Pacer(src.config().bandwidthBytesPerSecond());
            Migration.PageSender pages = new Migration.PageSender(src.vm(), out, pacer, 0);
            pages.postCopy();
            long start = System.nanoTime();
            long n = Migration.push(out, fresh, pages, remote, done, frames, left);
            Migration.Sent s = src.sent();
            // The recovery's push is a round of its own in the report (the source paused throughout).
            s.rounds.add(new MigrationReport.Round(s.rounds.size(), n, 0, System.nanoTime() - start, 0, pacer.measured(), 0, true));
            s.pages += out.pages();
            s.zeroPages += out.zeroPages();
            s.bytes += out.bytes();
            return n;
        } catch (PostCopyPausedException e) {
            throw e;
        } catch (RuntimeException e) {
            throw new PostCopyPausedException("post-copy recovery failed on the source: " + e.getMessage(), e, src);
        }
    }
}
