/**
 * Dirty logging: {@link io.vmpage.engine.dirty.DirtyLog} (enable, harvest, disable, dirty rings) with
 * its {@link io.vmpage.engine.dirty.DirtyTracking} methods, the {@link io.vmpage.engine.dirty.DirtySnapshot}
 * a harvest fills and the lock-free {@link io.vmpage.engine.dirty.DirtyBitmap} it collects into. The
 * engine's side of a log ({@link io.vmpage.engine.dirty.DirtyLog.Writer}: the fault side's marks, host
 * stores, dropped D bits) and the fault side of the write-protect protocol
 * ({@link io.vmpage.engine.dirty.WriteProtection}) are internal: a VM hands them to its paging backend.
 */
package io.vmpage.engine.dirty;
