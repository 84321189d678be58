/**
 * Nested paging (Intel EPT), after KVM's TDP MMU: {@link io.vmpage.engine.paging.nested.NestedPaging}
 * and its leaf format and change function, {@link io.vmpage.engine.paging.nested.EptLeaf}. Internal
 * (see {@link io.vmpage.engine.paging}).
 */
@Internal
package io.vmpage.engine.paging.nested;

import io.vmpage.engine.Internal;
