/**
 * Host swap: {@link io.vmpage.engine.swap.SwapDevice}, a memory-mapped file of 4 KiB slots a host swaps
 * guest pages out to ({@code Vm.swapOut}) and in from (the engine's fetch-on-fault path), and
 * {@link io.vmpage.engine.swap.SwapException}, what a failed swap operation throws.
 */
package io.vmpage.engine.swap;
