/**
 * Content-based page sharing as ESX does it (Waldspurger, OSDI 2002): {@link
 * io.vmpage.engine.sharing.PageSharingScanner}, an Agrona agent that scans guest pages at random at a
 * bounded rate ({@link io.vmpage.engine.sharing.SharingConfig}), keeps one host-wide table of hint and
 * shared frames, and merges through {@code Host.share} / {@code Host.joinShared}, which compare in full
 * before they map anything; {@link io.vmpage.engine.sharing.SharingStats} is what it reports.
 */
package io.vmpage.engine.sharing;
