/**
 * The hypervisor's API: {@link io.vmpage.engine.Host}, {@link io.vmpage.engine.Vm},
 * {@link io.vmpage.engine.Vcpu}, {@link io.vmpage.engine.VmConfig}, the paging modes, exit reasons,
 * the paravirtual {@link io.vmpage.engine.Hypercalls} and the exceptions an embedder sees.
 *
 * <h2>Layout</h2>
 * <ul>
 * <li>{@code io.vmpage.engine}: this API, and the request protocol between vCPUs (remote TLB flushes,
 *     IPIs, retirement) and the host-access guard ({@code HostAccesses}), package-private.
 * <li>{@link io.vmpage.engine.memory}: machine frames and the guest-physical map, their encodings.
 * <li>{@link io.vmpage.engine.dirty}: the dirty log and its write-protect protocol.
 * <li>{@link io.vmpage.engine.paging}: the paging backends behind one interface, one package per mode.
 * <li>{@link io.vmpage.engine.guest}: a guest kernel model that drives any mode.
 * <li>{@link io.vmpage.engine.swap}: the host swap device, a memory-mapped file of page slots.
 * <li>{@link io.vmpage.engine.policy}: ESX's allocation policy: working-set sampling, the idle memory tax.
 * <li>{@link io.vmpage.engine.sharing}: the content-based page-sharing scanner (ESX's hint and shared
 *     frames), an Agrona agent a host runs.
 * </ul>
 * Types marked {@link io.vmpage.engine.Internal} (and all of {@code engine.paging}) are the internal
 * interface between these packages: {@code Vm} hands its backend a {@code VmContext} and each
 * {@code Vcpu} a {@code VcpuContext}, the only ways into their internals; nothing an embedder gets from
 * the API leads to them.
 *
 * <h2>Locking</h2>
 * Which lock protects what, in the order they may be taken (a lock may be held while taking one further
 * down the list, never one above it), after KVM's {@code Documentation/virt/kvm/locking.rst}:
 * <ol>
 * <li>{@code PageSharingScanner} monitor: its table and counters, for one scan step; it then takes the
 *     two below (the VM list, a merge). {@code Host.stopPageSharing} joins the scanner's thread without
 *     holding the host's monitor.
 * <li>{@code Host} monitor: the VM list. {@code destroyVm} holds it while it waits for the VM's vCPUs
 *     to let go (so no vCPU exit path takes it).
 * <li>{@code Host.sharing}: one merge at a time (KSM's single ksmd). Held while waiting for vCPU flushes
 *     and host accesses of the two VMs; takes each VM's EPT lock in turn, never both at once.
 * <li>{@code Vm.pauseControl}: pause, resume, throttle changes, state transfer and vCPU retirement of one
 *     VM. Held while waiting for its vCPUs to leave guest mode (a vCPU never takes it: it parks outside
 *     it) and, by a state import, while the backend loads CR3 (its lock); a destroy takes it inside the
 *     two locks above to stop the throttle.
 * <li>{@code DirtyLog.control}: enable, disable and harvest of one VM. Held while the backend
 *     write-protects (taking the backend's lock) and while waiting for a remote TLB flush.
 * <li>The backend's lock, one per VM: {@code ShadowPaging.lock} and {@code ParavirtualPaging.lock}
 *     (KVM's mmu_lock, Xen's per-domain page-table lock) are held while waiting for a remote TLB flush;
 *     a vCPU waiting for either keeps serving its own flush requests and IPIs
 *     ({@code Vcpu.lockServingRequests}), so a holder that waits for that vCPU cannot deadlock with it.
 *     {@code NestedPaging.lock} (EPT fills, removals, copy-on-write breaks) is never held while waiting
 *     for a vCPU or a host access.
 * <li>{@code DirtyLog.reapLock}: ring consumers; never held while waiting for anything.
 * <li>{@code HostAccesses} monitor: one synchronize at a time; it waits for host accesses only, and is
 *     never taken inside a host access.
 * </ol>
 * Where a vCPU parks: a vCPU waiting inside the engine (for a lock, a remote flush, a frame another
 * thread brings in) serves flushes and IPIs but is never held out for a pause or a throttle there,
 * since it may hold one of the locks above or be inside a host access; it parks when it next starts an
 * access, enters guest mode, or returns from an exit or a privileged operation, which check the pause
 * themselves (a kick served while waiting is not lost). A pauser that still waits for a vCPU in guest
 * mode kicks it again; no waiter waits for a vCPU whose thread died while running it.
 * Lock-free state and who orders it: the frame table's descriptors and free list (CAS), the p2m
 * entries (CAS), EPT and shadow leaves written by the hardware's A/D updates and by write grants and
 * revokes (CAS, each format's change function: {@code EptLeaf.change}, {@code ShadowLeaf.change},
 * {@code PvL1Entry.change}), the dirty bitmap (CAS and get-and-set), a vCPU's
 * request protocol (its {@code kicks}, {@code served} and {@code mode}). Methods documented "Lock held"
 * assert it.
 *
 * <h2>Waiting for the users of a frame</h2>
 * A machine frame leaves a VM (discard, merge, copy-on-write break, destroy) only after (1) its p2m
 * entry and leaves are gone, (2) a remote TLB flush has been served by every vCPU in guest mode (a vCPU
 * makes each access, translate to store, inside guest mode) and (3) the host accesses in flight have
 * ended ({@link io.vmpage.engine.HostAccesses}). A destroyed VM's vCPUs are retired before anything is
 * freed.
 */
package io.vmpage.engine;
