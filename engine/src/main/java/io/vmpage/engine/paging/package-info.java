/**
 * The paging backends (internal): {@link io.vmpage.engine.paging.PagingBackend}, one per VM, created by
 * {@link io.vmpage.engine.paging.PagingBackend#create} for the VM's mode and telling what the mode can do
 * beyond the common operations ({@link io.vmpage.engine.paging.PagingBackend#sharing},
 * {@link io.vmpage.engine.paging.PagingBackend#unmap}, {@link io.vmpage.engine.paging.PagingBackend#hypercalls},
 * {@link io.vmpage.engine.paging.PagingBackend#supports}), so no code dispatches on a mode's class;
 * {@link io.vmpage.engine.paging.FrameSharing}, the copy-on-write steps a mode that shares frames offers;
 * and the two narrow views a backend gets of its VM and of an exiting vCPU
 * ({@link io.vmpage.engine.paging.VmContext}, {@link io.vmpage.engine.paging.VcpuContext}).
 *
 * <p>One package per mode: {@code nested} (EPT, KVM's TDP MMU), {@code shadow} (KVM's shadow MMU),
 * {@code pv} (Xen PV direct paging). Each has one class for the entries that map guest memory in its
 * format ({@code EptLeaf}, {@code ShadowLeaf}, {@code PvL1Entry}): the layout with its software bits, and
 * the one {@code change} function every change of such an entry goes through, which derives the
 * dirty-log marks and the need for a TLB flush from the old and the new value (KVM's
 * {@code handle_changed_spte}). Sharing, ballooning, host swap and post-copy add their entry changes
 * through the same functions.
 */
@Internal
package io.vmpage.engine.paging;

import io.vmpage.engine.Internal;
