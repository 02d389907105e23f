/* nbdfs — flushes and what they cover.
 *
 * Flush bookkeeping: a write-type command that *completes* successfully
 * (without FUA) is counted against the connection that acknowledged it,
 * and a flush that succeeds takes off what was counted, on every
 * connection, when it was sent (one flush covers them all under
 * CAN_MULTI_CONN: see "flush" below). A write still in flight when a flush starts is
 * therefore not counted as covered (the spec: a client "MUST NOT issue an
 * NBD_CMD_FLUSH request until it has received the reply for all write
 * commands which it expects to be covered by the flush").
 *
 * Durability: an acknowledged write is only known persistent once a flush
 * sent after its reply succeeded (or it was sent with FUA): a server may
 * keep it in a volatile cache, and a server that dies loses that cache.
 * So when a connection dies (or is replaced) with acknowledged, unflushed
 * writes, they are at risk; a flush that succeeds later, on another
 * connection or the reconnected one, says nothing about them (the server
 * that held them may have restarted). We report, we do not replay:
 * replaying would mean keeping a copy of every acknowledged write until
 * its flush, i.e. memory bounded only by how long the user waits between
 * fsyncs (a whole disk image written without fsync), and a replay after
 * another client wrote the same blocks would overwrite newer data. The
 * report follows the kernel's writeback errors (errseq_t): the export has
 * an error sequence, bumped at each such loss (with a warning saying how
 * many writes and bytes were at risk); each FUSE open samples it and its
 * next fsync/flush after a bump fails with EIO, once per open file
 * description (nbdc_pool_wb_err_*). Within the pool, a flush (and a FUA
 * emulated with one) fails with EIO if a loss was recorded after the
 * request began, and a FLUSH whose connection dies is never retried on
 * another one (it could only succeed there without covering anything).
 */

#include <errno.h>
#include <string.h>
#include "nbdclient/error.h"
#include "nbdclient/names.h"
#include "nbdclient/pool-internal.h"
#include "nbdclient/protocol.h"

guint
pool_wb_counter (NbdPool *pool)
{
  return (guint) g_atomic_int_get (&pool->wb_err) >> 1;
}

/* Records that a connection lost acknowledged, unflushed writes. pool->lock
 * held. */
void
pool_record_loss_locked (NbdPool *pool, const char *conn_name,
                         guint64 writes, guint64 bytes, const char *why)
{
  guint v = (guint) g_atomic_int_get (&pool->wb_err);
  g_atomic_int_set (&pool->wb_err, (gint) (((v >> 1) + 1) << 1));
  g_warning ("%s %s with %" G_GUINT64_FORMAT " acknowledged write(s) (%"
             G_GUINT64_FORMAT " bytes) not yet flushed: they may be lost; "
             "the next fsync of every open file reports EIO", conn_name,
             why, writes, bytes);
}

unsigned
nbdc_pool_wb_err_sample (NbdPool *pool)
{
  guint v = (guint) g_atomic_int_get (&pool->wb_err);
  /* As errseq_sample(): an error nobody was told about yet is reported
   * to the next one who looks, even if it opened after the loss. */
  return (v & WB_SEEN) ? v : 0;
}

int
nbdc_pool_wb_err_check (NbdPool *pool, unsigned *sample)
{
  for (;;) {
    guint old = g_atomic_int_get ((gint *) sample);
    guint v = (guint) g_atomic_int_get (&pool->wb_err);
    if ((v | WB_SEEN) == (old | WB_SEEN) || v == 0)
      return 0;
    g_atomic_int_or ((guint *) &pool->wb_err, WB_SEEN);
    /* Once per open file description, even with concurrent fsyncs. */
    if (g_atomic_int_compare_and_exchange ((gint *) sample, (gint) old,
                                           (gint) (v | WB_SEEN)))
      return EIO;
  }
}

/* One NBD_CMD_FLUSH for the whole pool. Several connections are only
 * opened under NBD_FLAG_CAN_MULTI_CONN (nbdc_pool_open), whose promise is
 * that "the effects of NBD_CMD_FLUSH ... MUST be visible across all
 * connections when the server sends its reply" (nbd-proto.md
 * "Transmission flags"): a flush on any one connection persists every
 * write the server had answered on any of them. So an fsync costs one
 * round trip, not one per connection that wrote (with 4 connections a
 * journal commit of an ext4 on a loop device sent up to 4). The part
 * records, per connection, what was unflushed there when it was sent; a
 * success takes that off every connection that is still the same one. A
 * connection that dies meanwhile has already recorded its unflushed
 * writes as a loss (pool_conn_dead), so the flush fails (flush_checked):
 * one flush covers the others' writes only if they are still there. */
typedef struct {
  NbdPool *pool;
  NbdcDoneFn done;            /* then called with err */
  void *opaque;
  unsigned n;
  struct {
    guint64 serial;           /* the connection it covers (its slot's) */
    guint64 writes, bytes;    /* what was unflushed there when sent */
  } covers[];
} FlushPart;

static void
flush_part_done (void *opaque, int err)
{
  FlushPart *f = opaque;
  NbdPool *pool = f->pool;
  g_mutex_lock (&pool->lock);
  /* Success covers what was acknowledged before it was sent; on failure
   * it all stays for the next flush. */
  for (unsigned i = 0; !err && i < f->n; i++) {
    if (f->covers[i].writes == 0 || pool->serial[i] != f->covers[i].serial)
      continue;
    pool->unflushed_writes[i] -= MIN (f->covers[i].writes,
                                      pool->unflushed_writes[i]);
    pool->unflushed_bytes[i] -= MIN (f->covers[i].bytes,
                                     pool->unflushed_bytes[i]);
  }
  g_mutex_unlock (&pool->lock);
  f->done (f->opaque, err);
  g_free (f);
}

typedef struct {
  NbdPool *pool;
  guint since;
  NbdcDoneFn done;
  void *opaque;
} FlushCheck;

static void
flush_checked (void *opaque, int err)
{
  FlushCheck *fc = opaque;
  if (!err && pool_wb_counter (fc->pool) != fc->since)
    err = EIO;
  fc->done (fc->opaque, err);
  g_free (fc);
}

/* A flush that also fails if a connection lost acknowledged writes after
 * the writeback error counter read `since`. */
void
pool_flush_since (NbdPool *pool, guint since, NbdcDoneFn done, void *opaque)
{
  if (!(pool->exp.eflags & NBD_FLAG_SEND_FLUSH)) {
    done (opaque, 0);
    return;
  }
  FlushCheck *fc = g_new (FlushCheck, 1);
  *fc = (FlushCheck) { pool, since, done, opaque };
  NbdcParent *p = pool_parent_new (pool, flush_checked, fc);
  /* (cap: pool->n may grow before the lock is taken.) */
  FlushPart *f = g_malloc0 (sizeof *f + pool->cap * sizeof f->covers[0]);
  int first_dirty = -1;
  NbdConn *dirty_conn = NULL;
  g_mutex_lock (&pool->lock);
  f->pool = pool;
  f->done = pool_parent_part_done;
  f->opaque = p;
  f->n = pool->n;
  for (unsigned i = 0; i < pool->n; i++) {
    f->covers[i].serial = pool->serial[i];
    f->covers[i].writes = pool->unflushed_writes[i];
    f->covers[i].bytes = pool->unflushed_bytes[i];
    if (f->covers[i].writes > 0 && first_dirty < 0) {
      first_dirty = i;
      dirty_conn = pool->conns[i];
    }
  }
  g_mutex_unlock (&pool->lock);
  if (first_dirty < 0) {
    /* Nothing acknowledged since the last flush: nothing to send (the
     * check still reports a loss recorded since `since`). */
    g_free (f);
    pool_parent_release (p);
    return;
  }
  /* Any live connection will do: the least loaded answers soonest. With
   * none alive, a dirty one's reconnect (or EIO) decides: that slot holds
   * a dead connection (a slot with unflushed writes is never emptied; a
   * reconnect retires, never frees, what it replaces). */
  NbdConn *conn;
  guint64 serial;
  int i = pool_pick (pool, &conn, &serial);
  pool_parent_add (p);
  NbdcCmd cmd = { .type = NBD_CMD_FLUSH, .done = flush_part_done,
                  .opaque = f };
  nbdc_conn_submit (i >= 0 ? conn : dirty_conn, &cmd);
  if (i >= 0)
    pool_unpick (pool, i);
  pool_parent_release (p);
}

int
pool_flush_slot_sync (NbdPool *pool, unsigned i, NbdConn *conn)
{
  if (!(pool->exp.eflags & NBD_FLAG_SEND_FLUSH))
    return 0;
  FlushPart *f = g_malloc0 (sizeof *f + pool->cap * sizeof f->covers[0]);
  SyncWait w;
  SYNC_INIT (w);
  f->pool = pool;
  f->done = pool_sync_done;
  f->opaque = &w;
  g_mutex_lock (&pool->lock);
  f->n = i + 1;
  f->covers[i].serial = pool->serial[i];
  f->covers[i].writes = pool->unflushed_writes[i];
  f->covers[i].bytes = pool->unflushed_bytes[i];
  g_mutex_unlock (&pool->lock);
  NbdcCmd cmd = { .type = NBD_CMD_FLUSH, .done = flush_part_done,
                  .opaque = f };
  nbdc_conn_submit (conn, &cmd);
  return pool_sync_wait (&w);
}

void
nbdc_pool_flush (NbdPool *pool, NbdcDoneFn done, void *opaque)
{
  pool_flush_since (pool, pool_wb_counter (pool), done, opaque);
}
