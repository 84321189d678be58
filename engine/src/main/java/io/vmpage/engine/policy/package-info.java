/**
 * ESX's memory allocation policy, piece by piece: {@link io.vmpage.engine.policy.WorkingSetSampler}
 * (statistical sampling of a VM's active fraction) and {@link io.vmpage.engine.policy.IdleMemoryTax}
 * (shares per page, with idle pages taxed).
 */
package io.vmpage.engine.policy;
