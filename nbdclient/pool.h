/* nbdfs — asynchronous transmission over one or more connections.
 *
 * This is the API FUSE mode (and tools/tests) use for I/O. Underneath:
 * conn.c (one connection: cookie table, serialised sends, one reader
 * thread) and the block-size layer (split at max payload, read-modify-write
 * or widen around the minimum block size).
 *
 * Contract for every nbdc_pool_* request call:
 *  - It returns at once; it never waits for a reply.
 *  - done(opaque, err) is called exactly once: err is 0 or a positive errno.
 *    It may run inside the call (errors found before sending: EINVAL for a
 *    range past the end, EROFS for writes to a read-only export, ENOTSUP for
 *    a command the server did not advertise, EIO when no connection is
 *    alive) or later on a connection's reader thread. done must not block
 *    for long: it runs on the reader.
 *  - Buffers stay owned by the caller and must stay valid until done.
 *  - Any offset and length inside the (addressable) export is accepted.
 *  - A write, zero or trim overlapping a read-modify-write in progress
 *    waits for it, and an RMW waits for overlapping ones in flight
 *    (blocksize.c); the wait is a queue, never a blocked thread.
 */
#ifndef NBDCLIENT_POOL_H
#define NBDCLIENT_POOL_H

#include <stdint.h>
#include <stddef.h>
#include <glib.h>
#include "nbdclient/completion.h"
#include "nbdclient/negotiate.h"

typedef struct NbdPool NbdPool;

typedef struct {
  unsigned connections;       /* 0 = 4 if CAN_MULTI_CONN else 1; >1 without
                                 CAN_MULTI_CONN is refused by open; with
                                 on_demand, the most that are opened */
  unsigned request_timeout;   /* seconds a request may wait for its reply
                                 (or for its send to finish), and the
                                 longest silence while one is owed, before
                                 the connection is declared dead; 0 = never */
  unsigned max_in_flight;     /* per connection; 0 = 64 */
  gboolean read_only;         /* refuse writes locally (EROFS) */
  unsigned reconnect;         /* seconds to keep re-opening a connection
                                 lost to EOF/reset/timeout (backoff 0.1 s
                                 doubling to 1 s); its requests wait and
                                 are resubmitted (those that timed out
                                 fail with EIO instead); 0 = fail them
                                 all with EIO */
  gboolean on_demand;         /* open only connection 1 at first; extras
                                 in the background while every live
                                 connection is busy, closed again when
                                 idle (pool-grow.c). FALSE: all at open,
                                 and an explicit `connections` that
                                 cannot be opened fails the open */
  unsigned idle_close_ms;     /* on_demand: close an extra connection
                                 unused this long; 0 = 30 s */
} NbdcPoolConfig;

/* Opens and negotiates every connection (with on_demand, the first one
 * only); checks that all of them agree on size and flags. *exp gets the first connection's export, with size the
 * addressable size: the export's rounded down to its minimum block size
 * (nbd-proto.md "Size constraints": no request may reach the bytes after
 * the last whole block); every request below is checked against it. */
NbdPool *nbdc_pool_open (const NbdcOptions *opts, const NbdcPoolConfig *cfg,
                         NbdExport *exp, GError **error);
unsigned nbdc_pool_connections (NbdPool *pool);   /* how many are alive */

/* Request flags accepted below are NBD_CMD_FLAG_* from protocol.h.
 * FUA is dropped if the server lacks NBD_FLAG_SEND_FUA *and* emulated with
 * a flush after the write (so O_DSYNC semantics hold). */
void nbdc_pool_pread (NbdPool *pool, void *buf, size_t count, uint64_t offset,
                      NbdcDoneFn done, void *opaque);
void nbdc_pool_pwrite (NbdPool *pool, const void *buf, size_t count,
                       uint64_t offset, uint32_t flags,
                       NbdcDoneFn done, void *opaque);

/* nbdc_pool_pwrite with the payload in a pipe instead of memory: the
 * first count bytes held in the pipe whose read end is pipe_fd, left in
 * place (see NbdcCmd.in_pipe) until done runs; the caller must not touch
 * the pipe before. Only for a write nbdc_pool_pwrite_pipe_ok accepts
 * (else EINVAL): not over TLS, aligned to the minimum block, one request,
 * no larger than the connections' scratch pipes. */
gboolean nbdc_pool_pwrite_pipe_ok (NbdPool *pool, size_t count,
                                   uint64_t offset);
void nbdc_pool_pwrite_pipe (NbdPool *pool, int pipe_fd, size_t count,
                            uint64_t offset, uint32_t flags,
                            NbdcDoneFn done, void *opaque);
/* NBD_CMD_FLUSH on every connection that has written since its last flush
 * (spec "Multi-conn"); done when all replied. Succeeds at once (0) when the
 * server has no NBD_FLAG_SEND_FLUSH (nothing to persist we can reach).
 * EIO if a connection lost acknowledged, unflushed writes meanwhile. */
void nbdc_pool_flush (NbdPool *pool, NbdcDoneFn done, void *opaque);

/* Writeback errors (pool-flush.c "Durability", modelled on the kernel's
 * errseq_t): when a connection dies holding acknowledged writes no flush
 * has covered, the export's error sequence moves on. An open file samples
 * it (nbdc_pool_wb_err_sample) and, after each flush, asks
 * nbdc_pool_wb_err_check: EIO once for every loss since its sample, which
 * then moves on (safe from several threads at once). */
unsigned nbdc_pool_wb_err_sample (NbdPool *pool);
int nbdc_pool_wb_err_check (NbdPool *pool, unsigned *sample);
/* NBD_CMD_TRIM; ENOTSUP without NBD_FLAG_SEND_TRIM. The range is shrunk to
 * whole minimum blocks (trim is advisory). */
void nbdc_pool_trim (NbdPool *pool, size_t count, uint64_t offset,
                     uint32_t flags, NbdcDoneFn done, void *opaque);
/* Range must read back as zeroes afterwards. NBD_CMD_WRITE_ZEROES when the
 * server has it (flags may carry NO_HOLE, FAST_ZERO, FUA); otherwise, unless
 * FAST_ZERO was asked (-> ENOTSUP), writes zero buffers in max-payload
 * pieces. Unaligned edges are written as data. */
void nbdc_pool_zero (NbdPool *pool, size_t count, uint64_t offset,
                     uint32_t flags, NbdcDoneFn done, void *opaque);
void nbdc_pool_cache (NbdPool *pool, size_t count, uint64_t offset,
                      NbdcDoneFn done, void *opaque);
/* NBD_CMD_BLOCK_STATUS for base:allocation; ENOTSUP if not negotiated.
 * extent is called zero or more times before done. flags may carry
 * NBD_CMD_FLAG_REQ_ONE. */
void nbdc_pool_block_status (NbdPool *pool, size_t count, uint64_t offset,
                             uint32_t flags, NbdcExtentFn extent,
                             NbdcDoneFn done, void *opaque);

/* Synchronous wrappers (tools, tests, shutdown paths): 0 or errno. Never
 * call them (or nbdc_pool_close) from a done/extent callback: those run
 * on a connection's reader, which would then wait for itself. */
int nbdc_pool_pread_sync (NbdPool *pool, void *buf, size_t count,
                          uint64_t offset);
int nbdc_pool_pwrite_sync (NbdPool *pool, const void *buf, size_t count,
                           uint64_t offset, uint32_t flags);
int nbdc_pool_flush_sync (NbdPool *pool);

/* Shutting down: from now on every reconnect (under way or started
 * later) gives up at most SECONDS from now (after at least one attempt),
 * so requests parked for a server on its way back wait a bounded time,
 * then fail with EIO. Safe from any thread but a done callback. */
void nbdc_pool_limit_reconnect (NbdPool *pool, unsigned seconds);

/* Gives up on the server: kills every connection and stops reconnecting,
 * so everything pending and everything submitted later fails with EIO
 * (shutdown past its deadline). reason goes into the warnings. */
void nbdc_pool_abort (NbdPool *pool, const char *reason);

/* Waits for everything in flight, flushes if anything was written since the
 * last flush, sends NBD_CMD_DISC on every connection, joins the readers and
 * frees. Returns 0 or the errno of that final flush; EIO also if a
 * connection lost acknowledged, unflushed writes and no
 * nbdc_pool_wb_err_check reported it (pool-flush.c "Durability"). */
int nbdc_pool_close (NbdPool *pool);
/* The same, but if the waiting and the flush are not done by `deadline`
 * (g_get_monotonic_time microseconds; 0 = no limit), aborts (see above):
 * the flush then fails with EIO. */
int nbdc_pool_close_until (NbdPool *pool, gint64 deadline);

#endif
