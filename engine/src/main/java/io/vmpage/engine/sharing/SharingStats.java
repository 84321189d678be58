package io.vmpage.engine.sharing;

/**
 * What page sharing has done on a host, as ESX reports it (a snapshot; counters since the scanner started,
 * frame counts as they are now).
 *
 * @param pagesScanned populated guest pages the scanner hashed
 * @param hints hint entries in the table now (hashed once, not shared yet)
 * @param sharedFrames machine frames shared copy-on-write now (the zero frame included)
 * @param sharers guest frames mapping a shared frame now
 * @param bytesSaved {@code (sharers - sharedFrames) x 4 KiB}: machine memory sharing gives back
 * @param copyOnWriteBreaks writes that gave a shared guest frame a private frame again, since the host started
 * @param merges pages the scanner merged (with a hint, into a shared frame, or into the zero frame)
 * @param zeroMerges of those, all-zero pages
 * @param staleHints hints dropped because their page changed (or went) since it was hashed
 * @param mismatches hash matches whose full compare failed (a collision, or a write since the hash)
 * @param evictedHints hints a full table window made room for a new entry over
 * @param scanRate pages scanned per second since the scanner started
 * @param metadataBytes the table's size: hashes and entries of hint and shared frames
 */
public record SharingStats(long pagesScanned, long hints, long sharedFrames, long sharers, long bytesSaved,
                           long copyOnWriteBreaks, long merges, long zeroMerges, long staleHints, long mismatches,
                           long evictedHints, double scanRate, long metadataBytes) {
}
