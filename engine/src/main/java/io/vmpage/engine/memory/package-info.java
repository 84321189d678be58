/**
 * Machine frames and the guest-physical map: the host's {@link io.vmpage.engine.memory.FrameTable}
 * (descriptors, a lock-free free list, the machine-to-physical map) and each VM's
 * {@link io.vmpage.engine.memory.GuestPhysicalMap}, as read-only views; their encodings in one class
 * each ({@link io.vmpage.engine.memory.FrameDescriptor}: frame types, owner, references;
 * {@link io.vmpage.engine.memory.P2mEntry}: the states of a guest frame: present private or shared,
 * ballooned, swapped, remote), each checking when it loads that its fields do not overlap; and the
 * engine's mutating handles ({@link io.vmpage.engine.memory.FrameAllocator},
 * {@link io.vmpage.engine.memory.PhysicalMapWriter}, internal). Ballooning, host swap and the allocation
 * policy of the overcommit work belong here.
 */
package io.vmpage.engine.memory;
