"""A content-addressed blob cache for the pull-through mirror.

Blobs are stored by digest, verified before they become visible, shared by every
client that asks while one upstream download is in progress, and evicted least
recently used first under a size bound.

Digests are L{dockerproxy.digests.Digest} values (sha256, sha384 or sha512, lowercase
hex of the right length): the caller parsed them, so every one is a safe file name.

L{store} (no Twisted; blocking calls on a local disk, the slow ones made from the
threads of the disk pool)::

    FilesystemStore(root: str | Path, *, fsync: bool = True)
        root/blobs/<alg>/<hex[:2]>/<hex>   committed, immutable
        root/tmp/                          partials (deleted at start)
        root/meta/<key>.json               small JSON documents
      (construction touches no disk)
      .create() -> None                    make the directories
      .recover() -> list[StoredBlob]       create(), delete tmp/ contents and malformed
                                           files; committed blobs, least recently used first
      .blob_path(digest) -> Path
      .open_partial() -> Partial           new unique file in tmp/: .path, .size,
                                           .write(bytes) (unbuffered), .sync(), .close(),
                                           .discard() (close and delete)
      .commit(partial, digest) -> Path     fsync (when on) + close + os.replace, atomic
      .remove(digest) -> None
      .touch(digest, when: float) -> None  mtime = last use: LRU order across restarts
      .read_meta(key) -> Any | None        None when missing or unreadable
      .write_meta(key, value) -> None      JSON, tmp file + os.replace; key is
                                           "/"-separated [A-Za-z0-9][A-Za-z0-9._-]* parts
      .meta_path(key) -> Path              ValueError for an unsafe key
      .used_bytes() -> int
      .free_bytes() -> int | None          statvfs: free for this process; None if unknown
    StoredBlob(digest: Digest, size: int, last_used: float)
    STATS_KEY                              the meta document of the proxy's counters

L{diskio} (blocking calls off the reactor)::

    ThreadedPool(reactor, threadpool)      a Pool: .run(f, *args) -> Deferred, f on a
                                           thread of the given ThreadPool; .report(g, *a)
                                           from f: g(*a) in the reactor thread, in order
    DiskWork(pool)
      .run(f, *args, key=None) -> Deferred calls of one key run in order; fires in the
                                           reactor thread, failures (OSError) included
      .background(what, f, *args, key=None)  the same, a failure logged
      .idle() -> Deferred[None]            nothing queued or running any more

L{fillwriter}::

    FillWriter(disk, partial, hasher, *, progressed, failed, pause, resume)
      .add(data)                           written then hashed on the pool, in order (one
                                           job at a time drains the queue in batches, each
                                           reported); pause() past QUEUE_LIMIT bytes
                                           behind, resume() back under it
      .written .behind .flushed() -> Deferred[None]  .close()  .order_key

L{documents}::

    Documents(store, disk: DiskWork)       the store's .read_meta, .write_meta,
                                           .remove_meta, .list_meta; writes on the pool,
                                           coalesced per key, read back until written

L{lruindex} (the committed blobs a BlobCache knows; reactor thread)::

    LruIndex(store, disk: DiskWork, clock, *, shared: bool,
             removed: Callable[[Digest], object])
      .load(blobs) .add(digest, size, path) .get(digest) -> Entry | None
      .mark_used(digest)                   newest in memory; mtime touched on the pool
      .pin(digest) .unpin(digest) -> bool  True when its last pin went
      .evict(limit, unwritten) -> int      unpinned blobs out, least recently used first,
                                           until used_bytes <= limit and the disk has room
                                           for unwritten bytes; how many went
      .adopt(digest) -> bool               in the index, or committed on the disk by
                                           another worker (then added)
      .forget(digest) .drop(digest)        out of the index (forget: file unlinked on the
                                           pool; drop: another worker removed it)
      .room(unwritten) -> int | None       free space less unwritten, plus what eviction
                                           could free
      .used_bytes .pinned len(index) digest in index .lru_order()

L{blobs} (Twisted, reactor thread)::

    BlobCache(store, clock: IReactorTime, max_size: int | None, *, disk: DiskWork,
              idle_timeout=60.0, max_blob_size: int | None = None,
              on_removed: Callable[[str], object] | None = None)
                                           on_removed(digest): a blob left the index
                                           (evicted, or its file found gone); settable
      .start() -> None                     store.recover() into the index, evict to max_size
      .stop() -> None                      abandon every fill, partials deleted (shutdown,
                                           after the drain); commits under way go on:
                                           wait for disk.idle()
      .lookup(digest) -> CachedBlob | None counts a hit or a miss; marks the blob used
      .get(digest) -> CachedBlob | None    the same without counting or marking
      .fill_for(digest) -> Fill | None     the fill in progress, if any
      .start_fill(digest, response: IResponse, idle_timeout: float | None = None) -> Fill
                                           FillInProgress if one is active; TooLarge (a
                                           ValueError) for a length beyond room(), before
                                           anything is read; ValueError for a status
                                           other than 200
      .room() -> int | None                the most a fill starting now may write: the
                                           least of max_size, max_blob_size and the disk's
                                           free space (less what fills under way still
                                           need, plus what eviction could free)
      .fits(length) -> bool                length <= room()
      .serve(request, digest, byte_range: tuple[int, int | None] | None = None,
             fallback: Fallback | None = None)
          -> Deferred[bool]                KeyError if neither committed nor being filled
      .used_bytes, len(cache), digest in cache, .lru_order() -> list[str]
      .index: LruIndex                     the committed blobs
      counters: .hits .misses .fills .failed_fills .evictions .bytes_served .coalesced
      .stats() -> dict[str, int | None]    the counters plus blobs, used_bytes, max_size,
                                           active_fills, pinned
    CachedBlob(digest: Digest, size: int, path: Path)
    FillInProgress(RuntimeError), TooLarge(ValueError)

L{fills}::

    Fill: .digest .length (int | None) .written .path (the partial) .committed
          .failure (str | None) .active .followers .done: Deferred[bool] .stop(why)
          .room (int | None: the most it writes) .max_blob_size (int | None)
          .abandoned (failed for the cache's reasons: followers fall back)
    Fallback (typing.Protocol; the caller's, per request):
      .rest(first, last: int | None) -> Deferred[bool]   the rest of a response under way
      .whole() -> Deferred[bool]                         a fresh answer: nothing was sent
    FillsInProgress (a BlobCache's): .get(digest) .add(fill) .end(fill) .list() len()
      .reserved .unwritten()               bytes fills of known length count against
                                           the bound, and have yet to write

Typical use for a blob GET::

    blob = cache.lookup(digest)
    if blob is None and cache.fill_for(digest) is None:
        response = ...                     # the upstream's 200
        cache.start_fill(digest, response)
    # status and headers other than Content-Length / Content-Range already set
    await cache.serve(request, digest, byte_range)

Fills: the body goes to a partial file as fast as the upstream sends it (no client
backpressure; the fill continues when every client has gone), hashed as it goes;
the writes and the hashing run on the disk pool (the upstream is paused while more
than L{fillwriter.QUEUE_LIMIT} bytes wait for them). It
is committed (on the disk pool; C{done} fires after) only if its size matches a
known C{response.length} and its digest matches; a mismatch, a truncated body
(C{ResponseFailed}, C{PotentialDataLoss} with a known length, more bytes than
announced), an idle timeout or a write error deletes the partial, makes nothing
visible and fires C{Fill.done} with C{False}. So does a body of unknown length that
passes the fill's C{room} or C{max_blob_size}: it is cut off there, followed or not.
A fill that fails for the cache's own reasons (a write error such as ENOSPC, passing
its C{room}) is I{abandoned}: its followers are handed to their C{Fallback} instead
of being aborted. A verified blob whose commit fails is sent whole to its followers
(their descriptors keep the file) and not kept: C{done} fires C{True} with
C{committed} false.

Serving (L{serving}, L{senders}): C{serve} sets Content-Length (for a range, 206 and
Content-Range; an unsatisfiable range gets 416 with C{Content-Range: bytes */size};
C{byte_range} is C{(first, last)} inclusive as in a Range header, C{last=None}
meaning to the end; suffix ranges are the caller's to convert). It streams with
backpressure in chunks of L{senders.READ_CHUNK} read by offset, pinning the blob
until done. A client following a fill gets bytes as they land, except the body's
final byte, which is held back until the blob is verified and committed; if the fill
fails, the client connection is aborted (if it is abandoned, the fallback takes over
from the offset the client got to, or answers afresh a client that had nothing
decided yet). With the length unknown, a plain GET streams chunked; a ranged or HEAD
request waits for the fill to end. The Deferred fires C{True} when the request was
finished, C{False} when it was aborted or the client went away (a client leaving
stops only its own follower). A body of known length on a plain TCP connection, of a
committed blob or of a fill (up to the bytes written), is sent with C{os.sendfile}
straight from the page cache once the response headers are flushed; TLS connections
and chunked responses read the file and write copies.

Eviction: least recently used first over committed blobs, never a pinned one (being
served or filled); when a fill with a known length starts, to make room for it
within C{max_size} and on the disk (what fills of known length still have to write
must fit in its free space); after a commit; when a pin is released while over the
bound. An evicted blob leaves the index at once and its file on the disk pool (its
bytes count as free space meanwhile).
"""
