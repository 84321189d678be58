package io.vmpage.engine.dirty;

import io.vmpage.engine.Internal;
import java.util.concurrent.locks.ReentrantLock;
import org.jctools.queues.SpscArrayQueue;

/**
 * A VM's dirty log (KVM's dirty logging, Xen's log-dirty mode): which guest frames were written since
 * the last harvest, for live migration and snapshots. Switched on and off while vCPUs run; one
 * {@link DirtyTracking} method at a time.
 *
 * <p><b>What counts as a write.</b> Guest stores through any vCPU (including stores the engine emulates),
 * the hardware's A/D updates in guest page tables, host-side stores ({@code Vm.writePhysicalLong} and
 * friends, as KVM's {@code kvm_write_guest} marks pages) and, under paravirtual paging, the hypervisor's
 * own page-table updates. Reads never count.
 *
 * <p><b>Guarantee.</b> A write that starts after {@link #enable} returns is reported by a harvest that
 * returns after the write: the next one that starts once the vCPU that was granted write access to the
 * page has left that exit (granting precedes logging, as in KVM's fast page fault, so another vCPU can
 * write the page in between). A harvest while every vCPU is paused therefore reports every write not yet
 * reported, and copying the pages each harvest reports, after it returns, converges to guest memory:
 * what pre-copy and stop-and-copy migration need. Pages may be reported without having changed
 * (over-reporting is allowed, as on real systems). For a page that one vCPU writes, or that the host
 * writes, the bound is tight: every write completed before a harvest started is in the copy built from
 * that harvest. That holds because a vCPU makes the whole access (translate, store, bookkeeping) inside
 * guest mode, so the harvest's remote flush waits for a store through a translation from before it, and
 * because host-side and emulated stores are marked after they land ({@code DirtyLogConcurrencyTest}).
 * Every change of an entry that drops a record of a write logs it first: a merge or discard replacing
 * a leaf whose EPT D bit is set ({@link #markDirtyBit}), a discard (the guest reads zeros afterwards).
 *
 * <p><b>Concurrency.</b> {@link #method} is volatile: the fault side reads it after granting write access
 * (see {@link WriteProtection}), {@link #enable} writes it before revoking, so either the fault sees the
 * log on and marks, or the revoke sweep comes after its grant. Harvests, enables and disables serialize
 * on {@link #control}; ring consumers (harvest, {@link #reap}, a vCPU whose ring filled) serialize on
 * {@link #reapLock}, which is never held while waiting for a vCPU.
 */
public final class DirtyLog {
    /** KVM's default dirty-ring size (entries per vCPU). */
    public static final int DEFAULT_RING_SIZE = 4096;
    /** Entries kept free when a ring reports full (KVM's reserved entries), so a vCPU never pushes into a full ring. */
    private static final int RING_RESERVE = 16;

    private final LoggedVm vm;
    private final DirtyBitmap bitmap;
    private final Object control = new Object();
    private final ReentrantLock reapLock = new ReentrantLock();
    /** The method in use, null when the log is off. Written under {@link #control}; read by any thread. */
    private volatile DirtyTracking method;
    /** Per-vCPU rings (vCPU index), created by the first DIRTY_RING enable; producer: the vCPU's owner thread. */
    private volatile SpscArrayQueue<Long>[] rings;
    private int ringSize;
    /** Harvests done. Written under {@link #control}. */
    private volatile long harvests;

    /**
     * Set by {@link #afterGrant} when vCPU {@code i}'s ring is (nearly) full; taken by that vCPU's exit
     * path, which reaps before it re-enters. Each element is written and read by that vCPU's owner only.
     */
    private final boolean[] ringFull;

    private DirtyLog(LoggedVm vm) {
        this.vm = vm;
        this.bitmap = new DirtyBitmap(vm.frames());
        this.ringFull = new boolean[vm.vcpus()];
    }

    /** The method in use, or null when logging is off. */
    public DirtyTracking method() {
        return method;
    }

    public boolean enabled() {
        return method != null;
    }

    /** Guest frames logged and not yet harvested (a racy count while writers run; rings not reaped yet excluded). */
    public long pending() {
        return bitmap.count();
    }

    /** Harvests done so far. */
    public long harvests() {
        return harvests;
    }

    /** {@link #enable(DirtyTracking, int)} with the default ring size. */
    public void enable(DirtyTracking how) {
        enable(how, DEFAULT_RING_SIZE);
    }

    /**
     * Starts logging with {@code how}: every write that completes after this returns is reported. Starting
     * the method already in use does nothing.
     *
     * @param ringEntries per-vCPU ring size for {@link DirtyTracking#DIRTY_RING} (a power of two, 64 to
     *     65536, fixed by the first ring enable as KVM fixes it per VM); ignored otherwise
     * @throws IllegalStateException when another method is in use (disable it first)
     * @throws IllegalArgumentException when the VM's paging mode cannot use {@code how}, or the ring size is bad
     */
    public void enable(DirtyTracking how, int ringEntries) {
        if (how == null) {
            throw new IllegalArgumentException("dirty tracking method is required");
        }
        if (!vm.supports(how)) {
            throw new IllegalArgumentException("dirty tracking " + how + " needs EPT A/D bits (paging mode NESTED); VM "
                + vm.id() + " runs " + vm.pagingMode());
        }
        synchronized (control) {
            DirtyTracking current = method;
            if (current == how) {
                return;
            }
            if (current != null) {
                throw new IllegalStateException("VM " + vm.id() + " is already logging with " + current + ": disable it first");
            }
            if (how == DirtyTracking.DIRTY_RING) {
                createRings(ringEntries);
            }
            method = how;
            vm.startDirtyLog(how);
            vm.flushRemoteTlbs(); // no vCPU keeps a writable (or dirty) translation from before
        }
    }

    @SuppressWarnings("unchecked")
    private void createRings(int entries) {
        if (entries < 64 || entries > 65536 || Integer.bitCount(entries) != 1) {
            throw new IllegalArgumentException("dirty ring size " + entries + " must be a power of two from 64 to 65536");
        }
        if (rings != null) {
            if (entries != ringSize) {
                throw new IllegalArgumentException("VM " + vm.id() + "'s dirty rings have " + ringSize
                    + " entries; the size is fixed once set (as KVM_CAP_DIRTY_LOG_RING)");
            }
            return;
        }
        SpscArrayQueue<Long>[] created = new SpscArrayQueue[vm.vcpus()];
        for (int i = 0; i < created.length; i++) {
            created[i] = new SpscArrayQueue<>(entries);
        }
        ringSize = entries;
        rings = created;
    }

    /**
     * Stops logging. What was logged stays for the next {@link #harvest} (dirty bits are collected into the
     * bitmap now); pages left write-protected get write access back at their next write, unlogged.
     */
    public void disable() {
        synchronized (control) {
            DirtyTracking current = method;
            if (current == null) {
                return;
            }
            if (current == DirtyTracking.DIRTY_BITS) {
                vm.collectDirtyBits(bitmap);
            }
            method = null;
        }
    }

    /**
     * Harvests the log into {@code into} (cleared first) and returns the number of frames reported:
     * drains the dirty rings, collects dirty bits, takes the bitmap word by word, write-protects the
     * reported frames again, and flushes every vCPU's TLB before returning (KVM's
     * {@code GET_DIRTY_LOG} + {@code CLEAR_DIRTY_LOG}, or {@code RESET_DIRTY_RINGS}). Safe while vCPUs run.
     */
    public long harvest(DirtySnapshot into) {
        if (into.frames() != bitmap.frames()) {
            throw new IllegalArgumentException("snapshot of " + into.frames() + " frames does not fit VM " + vm.id()
                + "'s " + bitmap.frames() + " frames");
        }
        synchronized (control) {
            into.clear();
            reap();
            DirtyTracking current = method;
            if (current == DirtyTracking.DIRTY_BITS) {
                vm.collectDirtyBits(bitmap);
            }
            vm.markUntracked(bitmap);
            bitmap.harvest(into);
            if (current == DirtyTracking.WRITE_PROTECT || current == DirtyTracking.DIRTY_RING) {
                vm.writeProtect(into);
            }
            if (current != null) {
                vm.flushRemoteTlbs(); // revoked write access and cleared D bits bind every vCPU from here
            }
            harvests++;
            return into.count();
        }
    }

    /**
     * Drains every vCPU's dirty ring into the bitmap (QEMU's reaper thread); any thread may call it at
     * any time. The pages stay writable until the next harvest reports and re-protects them.
     * Returns the entries drained.
     */
    public long reap() {
        SpscArrayQueue<Long>[] all = rings;
        if (all == null) {
            return 0;
        }
        long n = 0;
        reapLock.lock();
        try {
            for (SpscArrayQueue<Long> ring : all) {
                Long gfn;
                while ((gfn = ring.relaxedPoll()) != null) {
                    bitmap.mark(gfn);
                    n++;
                }
            }
        } finally {
            reapLock.unlock();
        }
        return n;
    }

    /**
     * Starts a reaper thread (QEMU's {@code kvm-reaper}) that drains the dirty rings into the bitmap every
     * {@code periodMicros} microseconds, so vCPUs rarely fill their rings; close the handle to stop it
     * (close waits for the thread to end).
     */
    public AutoCloseable startReaper(long periodMicros) {
        if (periodMicros <= 0) {
            throw new IllegalArgumentException("reaper period " + periodMicros + " us must be positive");
        }
        java.util.concurrent.atomic.AtomicBoolean running = new java.util.concurrent.atomic.AtomicBoolean(true);
        Thread reaper = new Thread(() -> {
            while (running.get()) {
                reap();
                java.util.concurrent.locks.LockSupport.parkNanos(periodMicros * 1000);
            }
        }, "dirty-ring-reaper-vm" + vm.id());
        reaper.setDaemon(true);
        reaper.start();
        return () -> {
            running.set(false);
            java.util.concurrent.locks.LockSupport.unpark(reaper);
            reaper.join();
        };
    }

    /** Entries waiting in vCPU {@code index}'s ring (0 without rings). */
    public int ringEntries(int index) {
        SpscArrayQueue<Long>[] all = rings;
        return all == null ? 0 : all[index].size();
    }

    // ------------------------------------------------------------------ engine side (see Writer)

    private void afterGrant(int vcpu, long gfn) {
        DirtyTracking current = method;
        if (current == null) {
            return;
        }
        if (current == DirtyTracking.DIRTY_RING && vcpu >= 0) {
            SpscArrayQueue<Long> ring = rings[vcpu];
            if (!ring.offer(gfn)) {
                bitmap.mark(gfn); // never lose it; the vCPU reaps before it re-enters
                ringFull[vcpu] = true;
            } else if (ring.size() >= ringSize - RING_RESERVE) {
                ringFull[vcpu] = true;
            }
            return;
        }
        bitmap.mark(gfn);
    }

    /**
     * What a VM's dirty log needs from the VM and its paging backend: the VM creates its log with
     * {@link Writer#create} and implements this.
     */
    @Internal
    public interface LoggedVm {
        int id();

        /** The paging mode's name, for messages. */
        String pagingMode();

        int vcpus();

        /** Guest frames. */
        long frames();

        /** See {@code PagingBackend.supports}. */
        boolean supports(DirtyTracking method);

        /** See {@code PagingBackend.startDirtyLog}. */
        void startDirtyLog(DirtyTracking method);

        /** See {@code PagingBackend.collectDirtyBits}. */
        void collectDirtyBits(DirtyBitmap bitmap);

        /** See {@code PagingBackend.markUntracked}. */
        void markUntracked(DirtyBitmap bitmap);

        /** See {@code PagingBackend.writeProtect}. */
        void writeProtect(DirtySnapshot harvested);

        /** See {@code Vm.flushRemoteTlbs}. */
        void flushRemoteTlbs();
    }

    /**
     * The engine's side of one VM's log, kept by the VM and handed to its paging backend: the marks of
     * the fault side, of host stores and of replaced dirty bits. Embedders see only the {@link DirtyLog}.
     */
    @Internal
    public static final class Writer {
        private final DirtyLog log;

        private Writer(DirtyLog log) {
            this.log = log;
        }

        /** A new log (off) for {@code vm}. */
        public static Writer create(LoggedVm vm) {
            return new Writer(new DirtyLog(vm));
        }

        /**
         * A log with no VM behind it: {@code frames} guest frames and {@code vcpus} rings, nothing to
         * write-protect or flush. For exercising the log and the entry-change functions on their own
         * (the jcstress tests, unit tests); the log and its marks are the production ones.
         */
        public static Writer detached(long frames, int vcpus) {
            return create(new LoggedVm() {
                @Override
                public int id() {
                    return 0;
                }

                @Override
                public String pagingMode() {
                    return "none (detached log)";
                }

                @Override
                public int vcpus() {
                    return vcpus;
                }

                @Override
                public long frames() {
                    return frames;
                }

                @Override
                public boolean supports(DirtyTracking method) {
                    return true;
                }

                @Override
                public void startDirtyLog(DirtyTracking method) {
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
        }

        /** The public log. */
        public DirtyLog log() {
            return log;
        }

        /** The method in use, null when off (volatile read). */
        public DirtyTracking method() {
            return log.method;
        }

        /**
         * The fault side of {@link WriteProtection}, after write access to {@code gfn} was granted: logs
         * the write in vCPU {@code vcpu}'s ring (-1: no vCPU, the bitmap) or the bitmap. Nothing while the
         * log is off.
         */
        public void afterGrant(int vcpu, long gfn) {
            log.afterGrant(vcpu, gfn);
        }

        /**
         * An EPT leaf with its D bit set is being replaced or cleared without a collection (merge,
         * discard): under D-bit logging the write it recorded is logged now.
         */
        public void markDirtyBit(long gfn) {
            if (log.method == DirtyTracking.DIRTY_BITS) {
                log.bitmap.mark(gfn);
            }
        }

        /**
         * A store the engine or the host made to guest frame {@code gfn} without a tracked mapping; call it
         * after the store landed. No vCPU flush orders such a store before a harvest's copy, so a full fence
         * comes first: without it the loads below (the method, the bit) may pass the store, which is still
         * in this CPU's store buffer (x86 lets a load pass an earlier store to another address). A bit seen
         * set that way may be one a harvest is taking at that moment: the harvest then copies the page
         * without the store, and the store is in no later harvest either. Likewise a log being enabled: a
         * store that becomes visible after {@link DirtyLog#enable} returned must be logged. (KVM's
         * {@code mark_page_dirty} sets the bit with a LOCK-prefixed {@code bts}, a full barrier on x86.)
         */
        public void markHost(long gfn) {
            java.lang.invoke.VarHandle.fullFence();
            if (log.method != null) {
                log.bitmap.mark(gfn);
            }
        }

        /**
         * {@link #markHost} for the frames {@code gfns[from + i]} whose bit {@code i} is set in {@code which},
         * after all their stores landed: one fence for the batch, for the same reason as there.
         */
        public void markHost(long[] gfns, int from, long which) {
            java.lang.invoke.VarHandle.fullFence();
            if (log.method != null) {
                for (long w = which; w != 0; w &= w - 1) {
                    log.bitmap.mark(gfns[from + Long.numberOfTrailingZeros(w)]);
                }
            }
        }

        /** Whether vCPU {@code vcpu}'s ring filled since the last call (clears it). Owner thread of that vCPU only. */
        public boolean takeRingFull(int vcpu) {
            boolean full = log.ringFull[vcpu];
            if (full) {
                log.ringFull[vcpu] = false;
            }
            return full;
        }

        /** The bitmap the log collects into (the stress tests race its words against the fault side). */
        public DirtyBitmap bitmap() {
            return log.bitmap;
        }
    }
}
