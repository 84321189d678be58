package io.vmpage.engine;

import java.util.concurrent.atomic.AtomicLong;

/**
 * A VM's virtio-balloon device, the host's side of memory ballooning (Waldspurger, OSDI 2002, section
 * 4; virtio 1.2, section 5.5). The host asks for a number of guest pages ({@link #setTarget}, the
 * device's {@code num_pages}); the guest's balloon driver ({@code guest.BalloonDriver}) allocates that
 * many pages from its own kernel, pins them so the guest never uses them, and hands their guest frame
 * numbers over ({@link #inflate}, the inflate queue), and the host frees their machine frames. On a
 * smaller target it gives pages back ({@link #deflate}, the deflate queue) and the guest may use them
 * again; it reports the balloon's size in {@link #actual}. A guest that touches a ballooned page anyway
 * (a guest bug) gets a fresh zero frame, and {@link #touchedWhileBallooned} counts it.
 *
 * <p>All three paging modes. Under paravirtual paging the device stands for Xen's balloon: the target is
 * xenstore's {@code memory/target}, and an inflate is {@code XENMEM_decrease_reservation}, which takes a
 * frame only once the guest has removed every mapping of it from its own page tables (the guest driver
 * clears the page's direct-map entry first, as Linux's Xen balloon does); a deflate lets the guest
 * populate the page again ({@code XENMEM_populate_physmap}).
 *
 * <p>Threads: the host sets the target from any thread; the guest driver (one vCPU at a time, under its
 * kernel's lock) inflates and deflates. The target and the counts are volatile / atomic.
 */
public final class Balloon {
    private final Vm vm;
    /** Pages the host asks the balloon to hold (num_pages). Written by the host, read by the driver. */
    private volatile long target;
    /** Pages in the balloon (the driver's {@code actual}). */
    private final AtomicLong actual = new AtomicLong();
    /** Machine frames the balloon gave back to the host so far. */
    private final AtomicLong framesFreed = new AtomicLong();

    Balloon(Vm vm) {
        this.vm = vm;
    }

    /**
     * Asks the guest to hold {@code pages} pages in its balloon (0 deflates it all).
     *
     * @throws IllegalArgumentException when {@code pages} is negative or more than the VM's memory
     */
    public void setTarget(long pages) {
        if (pages < 0 || pages > vm.physicalMap().frames()) {
            throw new IllegalArgumentException("balloon target " + pages + " pages is outside 0.." + vm.physicalMap().frames()
                + " (VM " + vm.id() + "'s memory)");
        }
        target = pages;
    }

    /** Pages the host asks for. */
    public long target() {
        return target;
    }

    /** Pages in the balloon now, as the driver reported them. */
    public long actual() {
        return actual.get();
    }

    /** Bytes in the balloon now. */
    public long bytes() {
        return actual() << io.vmpage.mmu.MachineMemory.FRAME_SHIFT;
    }

    /** Machine frames the balloon gave back to the host since the VM started. */
    public long framesFreed() {
        return framesFreed.get();
    }

    /** Guest touches of ballooned pages (each got a fresh zero frame; a guest bug). */
    public long touchedWhileBallooned() {
        return vm.balloonTouches();
    }

    /**
     * The driver's inflate of guest frame {@code gfn}: the page is the balloon's from now on and its
     * machine frame, if it had one, goes back to the host. Returns whether a frame was freed.
     *
     * @throws IllegalArgumentException when {@code gfn} is outside the VM
     * @throws IllegalStateException under paravirtual paging, when the guest's tables still map the page
     *     (nothing changed)
     */
    public boolean inflate(long gfn) {
        boolean freed = vm.balloonFrame(gfn);
        actual.incrementAndGet();
        if (freed) {
            framesFreed.incrementAndGet();
        }
        return freed;
    }

    /** The driver's deflate of guest frame {@code gfn}: the page is the guest's again. */
    public void deflate(long gfn) {
        vm.unballoonFrame(gfn);
        actual.decrementAndGet();
    }
}
