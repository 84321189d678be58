package io.vmpage.engine.dirty;

/** A detached dirty log ({@link DirtyLog.Writer#detached}) over {@code frames} frames and one vCPU, switched on. */
public final class TestLogs {
    private TestLogs() {
    }

    /** A log over {@code frames} guest frames, on with {@code method} (null: off). */
    public static DirtyLog.Writer writer(long frames, DirtyTracking method) {
        DirtyLog.Writer writer = DirtyLog.Writer.detached(frames, 1);
        if (method != null) {
            writer.log().enable(method);
        }
        return writer;
    }
}
