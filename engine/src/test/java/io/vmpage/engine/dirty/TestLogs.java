package io.vmpage.engine.dirty;

/**
 * A dirty log on a VM model that only has frames and one vCPU (no backend, no TLBs), for tests of the
 * entry-format change functions: the log and its engine side are the production ones.
 */
public final class TestLogs {
    private TestLogs() {
    }

    /** A log over {@code frames} guest frames, on with {@code method} (null: off). */
    public static DirtyLog.Writer writer(long frames, DirtyTracking method) {
        DirtyLog.Writer writer = DirtyLog.Writer.create(new DirtyLog.LoggedVm() {
            @Override
            public int id() {
                return 1;
            }

            @Override
            public String pagingMode() {
                return "test";
            }

            @Override
            public int vcpus() {
                return 1;
            }

            @Override
            public long frames() {
                return frames;
            }

            @Override
            public boolean supports(DirtyTracking m) {
                return true;
            }

            @Override
            public void startDirtyLog(DirtyTracking m) {
            }

            @Override
            public void collectDirtyBits(DirtyBitmap bitmap) {
            }

            @Override
            public void markUntracked(DirtyBitmap bitmap) {
            }

            @Override
            public void writeProtect(DirtySnapshot harvested) {
            }

            @Override
            public void flushRemoteTlbs() {
            }
        });
        if (method != null) {
            writer.log().enable(method);
        }
        return writer;
    }
}
