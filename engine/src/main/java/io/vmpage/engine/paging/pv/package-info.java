/**
 * Paravirtual direct paging, after Xen's x86-64 PV MMU: {@link
 * io.vmpage.engine.paging.pv.ParavirtualPaging}, the hypercall interface it gives each vCPU, and the
 * L1 entry format and change function, {@link io.vmpage.engine.paging.pv.PvL1Entry}. Internal (see
 * {@link io.vmpage.engine.paging}).
 */
@Internal
package io.vmpage.engine.paging.pv;

import io.vmpage.engine.Internal;
