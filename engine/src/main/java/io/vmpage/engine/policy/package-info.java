/**
 * ESX's memory allocation policy, piece by piece: {@link io.vmpage.engine.policy.WorkingSetSampler}
 * (statistical sampling of a VM's active fraction), {@link io.vmpage.engine.policy.IdleMemoryTax}
 * (shares per page, with idle pages taxed), {@link io.vmpage.engine.policy.Allocation} (min, max, shares;
 * admission control is {@code Host.admitVm}), {@link io.vmpage.engine.policy.FreeMemoryState}, and
 * {@link io.vmpage.engine.policy.Reclaimer}, the agent that reclaims by balloon and swap from the VM the tax
 * picks.
 */
package io.vmpage.engine.policy;
