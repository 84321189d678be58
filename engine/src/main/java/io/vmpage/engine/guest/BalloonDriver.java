package io.vmpage.engine.guest;

import io.vmpage.engine.Balloon;
import io.vmpage.engine.Vcpu;

/**
 * The guest kernel's virtio-balloon driver (Linux's {@code drivers/virtio/virtio_balloon.c}, in shape):
 * {@link #service} moves the balloon toward the device's target, taking free pages from the kernel
 * (which never uses them while they are in the balloon) and handing their frame numbers to the device,
 * or giving pages back to the kernel, {@link #BATCH} per request. With DEFLATE_ON_OOM (virtio's
 * {@code VIRTIO_BALLOON_F_DEFLATE_ON_OOM}, on here by default; QEMU's {@code deflate-on-oom} property
 * defaults to off) a kernel that runs out of free pages takes {@link #OOM_PAGES} back from the balloon
 * before it fails an allocation. Under Xen PV it is Linux's {@code drivers/xen/balloon.c} in shape: a
 * page's direct-map entry is cleared before its frame is given back ({@code decrease_reservation}), and
 * a deflated page is populated again on its next use.
 *
 * <p>Threads: under the kernel's lock (a vCPU inside the kernel), as every kernel structure.
 */
public final class BalloonDriver {
    /** Pages per inflate or deflate request (virtio-balloon's VIRTIO_BALLOON_ARRAY_PFNS_MAX). */
    public static final int BATCH = 256;
    /** Pages the out-of-memory path takes back at once (Linux virtio_balloon's default {@code oom_pages}). */
    public static final int OOM_PAGES = 256;

    private final GuestKernel kernel;
    private final Balloon device;
    /** Guest frames in the balloon, in the order they went in (the last in comes out first). Kernel lock. */
    private long[] pages = new long[64];
    private int count;
    private boolean deflateOnOom = true;
    private long deflatedOnOom;

    BalloonDriver(GuestKernel kernel, Balloon device) {
        this.kernel = kernel;
        this.device = device;
    }

    /**
     * The driver's work item (virtio_balloon's {@code update_balloon_size_func}), run on {@code cpu}:
     * inflates or deflates toward the device's target until it is there or, inflating, the kernel has no
     * free page left to give. Returns the pages moved: positive inflated, negative deflated.
     * Under paravirtual paging each page leaves the kernel's direct map before the device takes it.
     *
     * @throws IllegalStateException when the hypervisor refuses a page (paravirtual: still mapped); that
     *     page goes back on the free list
     */
    public long service(Vcpu cpu) {
        return kernel.inKernel(cpu, () -> {
            long moved = 0;
            long target = device.target();
            while (count < target && kernel.freeFrameCount() > 0) {
                int batch = (int) Math.min(BATCH, Math.min(target - count, kernel.freeFrameCount()));
                for (int i = 0; i < batch; i++) {
                    long gfn = kernel.takeFreeFrame();
                    try {
                        kernel.giveToBalloon(cpu, gfn);
                        device.inflate(gfn);
                    } catch (RuntimeException e) {
                        kernel.giveFreeFrame(gfn);
                        throw e;
                    }
                    push(gfn);
                }
                moved += batch;
            }
            while (count > target) {
                int batch = (int) Math.min(BATCH, count - target);
                moved -= deflate(batch);
            }
            return moved;
        });
    }

    /** Pages in the balloon. */
    public int pages() {
        return count;
    }

    /** Whether the kernel takes pages back from the balloon when it runs out of memory. */
    public void setDeflateOnOom(boolean on) {
        deflateOnOom = on;
    }

    /** Pages the kernel took back from the balloon because it ran out of memory. */
    public long deflatedOnOom() {
        return deflatedOnOom;
    }

    /** Kernel lock held: the kernel has no free page left; gives some back if the feature allows. Returns how many. */
    int releaseForOom() {
        if (!deflateOnOom || count == 0) {
            return 0;
        }
        int n = deflate(Math.min(OOM_PAGES, count));
        deflatedOnOom += n;
        return n;
    }

    /** Kernel lock held. */
    private int deflate(int n) {
        for (int i = 0; i < n; i++) {
            long gfn = pages[--count];
            device.deflate(gfn);
            kernel.giveFreeFrame(gfn);
        }
        return n;
    }

    private void push(long gfn) {
        if (count == pages.length) {
            pages = java.util.Arrays.copyOf(pages, count * 2);
        }
        pages[count++] = gfn;
    }

    /** For the kernel's saved state. */
    void save(java.io.DataOutputStream out) throws java.io.IOException {
        out.writeBoolean(deflateOnOom);
        out.writeInt(count);
        for (int i = 0; i < count; i++) {
            out.writeLong(pages[i]);
        }
    }

    /**
     * For a restored kernel: the balloon's pages go into the destination's device again, so a guest touch
     * of one is still seen (the source never populated them, so none was sent).
     */
    void restore(java.io.DataInputStream in, long frames) throws java.io.IOException {
        deflateOnOom = in.readBoolean();
        int n = in.readInt();
        if (n < 0 || n > frames) {
            throw new IllegalArgumentException("a guest kernel state with " + n + " balloon pages for a VM of " + frames);
        }
        for (int i = 0; i < n; i++) {
            long gfn = in.readLong();
            if (gfn < 0 || gfn >= frames) {
                throw new IllegalArgumentException("a guest kernel state whose balloon holds guest frame " + gfn + ", outside the VM");
            }
            device.inflate(gfn);
            push(gfn);
        }
    }
}
