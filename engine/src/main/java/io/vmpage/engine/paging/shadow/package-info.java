/**
 * Shadow paging, after KVM's shadow MMU: {@link io.vmpage.engine.paging.shadow.ShadowPaging}, the
 * software walk of the guest's tables it needs, and the shadow leaf format and change function, {@link
 * io.vmpage.engine.paging.shadow.ShadowLeaf}. Internal (see {@link io.vmpage.engine.paging}).
 */
@Internal
package io.vmpage.engine.paging.shadow;

import io.vmpage.engine.Internal;
