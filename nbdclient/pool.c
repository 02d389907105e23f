/* nbdfs — several connections to one export, used as one (nbd-proto.md
 * "Multi-conn" under NBD_FLAG_CAN_MULTI_CONN, and "Ordering of messages
 * and writes").
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

#define CONN(pool, i) ((NbdConn *) g_atomic_pointer_get (&(pool)->conns[i]))

/* ---- the writeback error sequence (see Durability above) ---- */

#define WB_SEEN 1u

static guint
wb_counter (NbdPool *pool)
{
  return (guint) g_atomic_int_get (&pool->wb_err) >> 1;
}

/* Records that a connection lost acknowledged, unflushed writes. pool->lock
 * held. */
static void
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

static void pool_flush_since (NbdPool *pool, guint since, NbdcDoneFn done,
                              void *opaque);

/* ---- pool-level requests made of parts ---- */

NbdcParent *
pool_parent_new (NbdPool *pool, NbdcDoneFn done, void *opaque)
{
  NbdcParent *p = g_new0 (NbdcParent, 1);
  p->pool = pool;
  p->done = done;
  p->opaque = opaque;
  p->pending = 1;
  p->wb_at_start = wb_counter (pool);
  g_mutex_lock (&pool->lock);
  pool->outstanding++;
  g_mutex_unlock (&pool->lock);
  return p;
}

void
pool_parent_add (NbdcParent *p)
{
  g_atomic_int_inc (&p->pending);
}

static void
parent_end (NbdcParent *p, int err)
{
  NbdPool *pool = p->pool;
  p->done (p->opaque, err);
  if (p->owned) {
    if (p->cleanup)
      p->cleanup (p->owned);
    else
      g_free (p->owned);
  }
  g_free (p);
  g_mutex_lock (&pool->lock);
  if (--pool->outstanding == 0)
    g_cond_broadcast (&pool->cond);
  g_mutex_unlock (&pool->lock);
}

static void
parent_flushed (void *opaque, int err)
{
  parent_end (opaque, err);
}

void
pool_parent_part_done (void *opaque, int err)
{
  NbdcParent *p = opaque;
  if (err)
    g_atomic_int_compare_and_exchange (&p->err, 0, err);
  if (!g_atomic_int_dec_and_test (&p->pending))
    return;
  err = g_atomic_int_get (&p->err);
  if (!err && p->flush_after) {
    /* FUA emulation: the write is only acknowledged once flushed (and
     * not if a connection lost writes since it began: maybe ours). */
    pool_flush_since (p->pool, p->wb_at_start, parent_flushed, p);
    return;
  }
  parent_end (p, err);
}

void
pool_parent_release (NbdcParent *p)
{
  pool_parent_part_done (p, 0);
}

/* ---- spreading commands over connections ---- */

typedef struct {
  NbdPool *pool;
  unsigned idx;               /* the slot and connection it was last */
  NbdConn *conn;              /* submitted on (pool_resubmit updates) */
  uint32_t count;
  NbdcDoneFn done;
  void *opaque;
} WriteTrack;

/* Runs on w->conn's reader, so before that connection's dead callback
 * (pool_conn_dead) takes stock of what it leaves unflushed. */
static void
write_tracked (void *opaque, int err)
{
  WriteTrack *w = opaque;
  if (!err) {
    NbdPool *pool = w->pool;
    g_mutex_lock (&pool->lock);
    if (CONN (pool, w->idx) == w->conn) {
      pool->unflushed_writes[w->idx]++;
      pool->unflushed_bytes[w->idx] += w->count;
    }
    else {
      /* Acknowledged on a connection already replaced: no flush can
       * reach it any more. */
      g_autofree char *name = g_strdup_printf ("connection %u", w->idx + 1);
      pool_record_loss_locked (pool, name, 1, w->count, "was replaced");
    }
    g_mutex_unlock (&pool->lock);
  }
  w->done (w->opaque, err);
  g_free (w);
}

/* Least-loaded live connection; ties go round-robin. -1 if none. */
static int
pool_pick (NbdPool *pool)
{
  int best = -1;
  unsigned best_load = 0;
  g_mutex_lock (&pool->lock);
  unsigned start = pool->rr++;
  g_mutex_unlock (&pool->lock);
  for (unsigned k = 0; k < pool->n; k++) {
    unsigned i = (start + k) % pool->n;
    NbdConn *c = CONN (pool, i);
    if (!nbdc_conn_is_alive (c))
      continue;
    unsigned load = nbdc_conn_load (c);
    if (best < 0 || load < best_load) {
      best = i;
      best_load = load;
    }
  }
  return best;
}

static void
pool_send_on (NbdPool *pool, unsigned i, const NbdcCmd *cmd)
{
  /* A command sent with FUA is persisted before its reply (nbd-proto.md,
   * "Command flags"), so it leaves nothing for a later flush: O_DSYNC
   * writes followed by fsync then cost one round trip, not two. */
  if ((cmd->type == NBD_CMD_WRITE || cmd->type == NBD_CMD_WRITE_ZEROES
       || cmd->type == NBD_CMD_TRIM)
      && !(cmd->flags & NBD_CMD_FLAG_FUA)) {
    WriteTrack *w = g_new (WriteTrack, 1);
    *w = (WriteTrack) { pool, i, CONN (pool, i), cmd->count, cmd->done,
                        cmd->opaque };
    NbdcCmd c = *cmd;
    c.done = write_tracked;
    c.opaque = w;
    nbdc_conn_submit (CONN (pool, i), &c);
    return;
  }
  nbdc_conn_submit (CONN (pool, i), cmd);
}

/* Parks a command while a reconnect is under way; FALSE if none is. */
static gboolean pool_park (NbdPool *pool, const NbdcCmd *cmd, gboolean fresh);
/* No live connection and no reconnect under way: maybe try once more. */
static void pool_probe (NbdPool *pool);

void
pool_send_cmd (NbdPool *pool, const NbdcCmd *cmd)
{
  int i = pool_pick (pool);
  if (i < 0) {
    if (!pool_park (pool, cmd, TRUE)) {
      cmd->done (cmd->opaque, EIO);
      pool_probe (pool);
    }
    return;
  }
  pool_send_on (pool, i, cmd);
}

/* ---- flush ---- */

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
  NbdcParent *parent;
  unsigned n;
  struct {
    NbdConn *conn;            /* the connection it covers */
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
    if (f->covers[i].writes == 0 || CONN (pool, i) != f->covers[i].conn)
      continue;
    pool->unflushed_writes[i] -= MIN (f->covers[i].writes,
                                      pool->unflushed_writes[i]);
    pool->unflushed_bytes[i] -= MIN (f->covers[i].bytes,
                                     pool->unflushed_bytes[i]);
  }
  g_mutex_unlock (&pool->lock);
  pool_parent_part_done (f->parent, err);
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
  if (!err && wb_counter (fc->pool) != fc->since)
    err = EIO;
  fc->done (fc->opaque, err);
  g_free (fc);
}

/* A flush that also fails if a connection lost acknowledged writes after
 * the writeback error counter read `since`. */
static void
pool_flush_since (NbdPool *pool, guint since, NbdcDoneFn done, void *opaque)
{
  if (!(pool->exp.eflags & NBD_FLAG_SEND_FLUSH)) {
    done (opaque, 0);
    return;
  }
  FlushCheck *fc = g_new (FlushCheck, 1);
  *fc = (FlushCheck) { pool, since, done, opaque };
  NbdcParent *p = pool_parent_new (pool, flush_checked, fc);
  FlushPart *f = g_malloc0 (sizeof *f + pool->n * sizeof f->covers[0]);
  int first_dirty = -1;
  g_mutex_lock (&pool->lock);
  f->pool = pool;
  f->parent = p;
  f->n = pool->n;
  for (unsigned i = 0; i < pool->n; i++) {
    f->covers[i].conn = CONN (pool, i);
    f->covers[i].writes = pool->unflushed_writes[i];
    f->covers[i].bytes = pool->unflushed_bytes[i];
    if (f->covers[i].writes > 0 && first_dirty < 0)
      first_dirty = i;
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
   * none alive, a dirty one's reconnect (or EIO) decides. */
  int i = pool_pick (pool);
  if (i < 0)
    i = first_dirty;
  pool_parent_add (p);
  NbdcCmd cmd = { .type = NBD_CMD_FLUSH, .done = flush_part_done,
                  .opaque = f };
  nbdc_conn_submit (CONN (pool, i), &cmd);
  pool_parent_release (p);
}

void
nbdc_pool_flush (NbdPool *pool, NbdcDoneFn done, void *opaque)
{
  pool_flush_since (pool, wb_counter (pool), done, opaque);
}

/* ---- synchronous wrappers ---- */

typedef struct {
  GMutex lock;
  GCond cond;
  gboolean done;
  int err;
} SyncWait;

static void
sync_done (void *opaque, int err)
{
  SyncWait *w = opaque;
  g_mutex_lock (&w->lock);
  w->done = TRUE;
  w->err = err;
  g_cond_signal (&w->cond);
  g_mutex_unlock (&w->lock);
}

static int
sync_wait (SyncWait *w)
{
  g_mutex_lock (&w->lock);
  while (!w->done)
    g_cond_wait (&w->cond, &w->lock);
  g_mutex_unlock (&w->lock);
  g_mutex_clear (&w->lock);
  g_cond_clear (&w->cond);
  return w->err;
}

#define SYNC_INIT(w) do { g_mutex_init (&(w).lock); g_cond_init (&(w).cond); \
                          (w).done = FALSE; (w).err = 0; } while (0)

int
nbdc_pool_pread_sync (NbdPool *pool, void *buf, size_t count,
                      uint64_t offset)
{
  SyncWait w;
  SYNC_INIT (w);
  nbdc_pool_pread (pool, buf, count, offset, sync_done, &w);
  return sync_wait (&w);
}

int
nbdc_pool_pwrite_sync (NbdPool *pool, const void *buf, size_t count,
                       uint64_t offset, uint32_t flags)
{
  SyncWait w;
  SYNC_INIT (w);
  nbdc_pool_pwrite (pool, buf, count, offset, flags, sync_done, &w);
  return sync_wait (&w);
}

int
nbdc_pool_flush_sync (NbdPool *pool)
{
  SyncWait w;
  SYNC_INIT (w);
  nbdc_pool_flush (pool, sync_done, &w);
  return sync_wait (&w);
}

/* ---- open / close ---- */

const NbdExport *
nbdc_pool_export (NbdPool *pool)
{
  return &pool->exp;
}

unsigned
nbdc_pool_connections (NbdPool *pool)
{
  unsigned n = 0;
  for (unsigned i = 0; i < pool->n; i++)
    if (nbdc_conn_is_alive (CONN (pool, i)))
      n++;
  return n;
}

static void
pool_free (NbdPool *pool)
{
  g_mutex_lock (&pool->lock);
  pool->closing = TRUE;
  g_cond_broadcast (&pool->recond);
  g_mutex_unlock (&pool->lock);
  for (unsigned i = 0; i < pool->n; i++)
    if (pool->rethreads[i])
      g_thread_join (pool->rethreads[i]);
  if (pool->prober)
    g_thread_join (pool->prober);
  for (unsigned i = 0; i < pool->n; i++)
    nbdc_conn_free (CONN (pool, i));
  for (guint i = 0; i < pool->retired->len; i++)
    nbdc_conn_free (pool->retired->pdata[i]);
  g_ptr_array_free (pool->retired, TRUE);
  g_free (pool->rethreads);
  g_cond_clear (&pool->recond);
  g_free (pool->conns);
  g_free (pool->unflushed_writes);
  g_free (pool->unflushed_bytes);
  nbdc_export_clear (&pool->exp);
  nbdc_options_clear (&pool->opts);
  g_mutex_clear (&pool->lock);
  g_cond_clear (&pool->cond);
  g_free (pool);
}

/* ---- reconnect ---- */

/* Why a connection negotiated as e cannot join (or rejoin) the pool, or
 * NULL if it can. The pool was set up from the first connection: the
 * block-size layer aligns to its minimum block and splits at its maximum
 * payload, BLOCK_STATUS is sent when base:allocation was negotiated, and
 * the flags decide which commands and request flags we send. A connection
 * weaker in any of these would make us send what the spec forbids
 * (nbd-proto.md "Size constraints", "Metadata querying", "Structured
 * replies"); and a first connection in TLS must not come back in clear
 * text (--tls=on is only opportunistic at first contact). The context id
 * may differ: each connection uses its own. */
static char *
pool_weaker (NbdPool *pool, const NbdExport *e)
{
  const NbdExport *x = &pool->exp;
  if (e->size != x->size || e->eflags != x->eflags)
    return g_strdup_printf ("the export changed (size %" G_GUINT64_FORMAT
                            " flags 0x%x, was %" G_GUINT64_FORMAT
                            " flags 0x%x)", e->size, e->eflags, x->size,
                            x->eflags);
  if (x->tls && !e->tls)
    return g_strdup ("the server no longer uses TLS");
  /* (Requests over 4 GiB need the extended headers we had.) */
  if (pool->extended && !e->extended)
    return g_strdup_printf ("the server no longer offers extended headers "
                            "(%s)", nbdc_reply_mode_name (e));
  if (x->structured && !e->structured)
    return g_strdup ("the server no longer offers structured replies");
  if (pool->base_allocation && !e->base_allocation)
    return g_strdup ("the server no longer offers the base:allocation "
                     "metadata context");
  if (MAX (e->min_block, 1) > MAX (x->min_block, 1))
    return g_strdup_printf ("the minimum block size grew from %"
                            G_GUINT32_FORMAT " to %" G_GUINT32_FORMAT,
                            MAX (x->min_block, 1), e->min_block);
  if (e->max_block && e->max_block < pool->max_payload)
    return g_strdup_printf ("the maximum payload shrank from %"
                            G_GUINT32_FORMAT " to %" G_GUINT32_FORMAT,
                            pool->max_payload, e->max_block);
  return NULL;
}

static void pool_conn_dead (void *opaque, NbdConn *conn);
static void pool_salvage (void *opaque, NbdConn *conn, const NbdcCmd *cmd);

static NbdConn *
pool_conn_new (NbdPool *pool, NbdTransport *t, const NbdExport *exp,
               unsigned i)
{
  g_autofree char *name = g_strdup_printf ("connection %u", i + 1);
  NbdcConnConfig cc = {
    .max_in_flight = pool->cfg.max_in_flight,
    .request_timeout = pool->cfg.request_timeout,
    .name = name,
  };
  /* The dead callback also takes stock of unflushed writes, so it is
   * set with or without reconnect. */
  cc.dead = pool_conn_dead;
  cc.opaque = pool;
  if (pool->cfg.reconnect)
    cc.salvage = pool_salvage;
  return nbdc_conn_new (t, exp, &cc);
}

/* A command handed back by a dead connection, or parked during a
 * reconnect: onto any live connection, else EIO. Its done function is
 * already the tracking one (pool_send_on), so it goes to the connection
 * as it is. */
static void
pool_resubmit (NbdPool *pool, const NbdcCmd *cmd)
{
  int i = pool_pick (pool);
  if (i < 0) {
    if (!pool_park (pool, cmd, FALSE)) {
      cmd->done (cmd->opaque, EIO);
      pool_probe (pool);
    }
    return;
  }
  NbdConn *conn = CONN (pool, i);
  if (cmd->done == write_tracked) {
    /* Its acknowledgement will come from this connection. */
    WriteTrack *w = cmd->opaque;
    w->idx = i;
    w->conn = conn;
  }
  nbdc_conn_submit (conn, cmd);
}

typedef struct {
  NbdcCmd cmd;
  gboolean fresh;             /* from pool_send_cmd: not yet tracked */
} Parked;

static gboolean
pool_park (NbdPool *pool, const NbdcCmd *cmd, gboolean fresh)
{
  g_mutex_lock (&pool->lock);
  gboolean park = pool->reconnecting > 0 && !pool->closing
    && !pool->aborted;
  if (park) {
    Parked *p = g_new (Parked, 1);
    p->cmd = *cmd;
    p->fresh = fresh;
    g_queue_push_tail (&pool->parked, p);
  }
  g_mutex_unlock (&pool->lock);
  return park;
}

/* How often one request may be handed back by a dying connection. A
 * restart costs one or two; a request the server dies of every time (or
 * a server that closes every connection at once) must end in EIO, not
 * loop with a fresh reconnect window each round. */
#define POOL_MAX_RETRIES 5

static void
pool_salvage (void *opaque, NbdConn *conn, const NbdcCmd *cmd)
{
  NbdPool *pool = opaque;
  NbdcCmd c = *cmd;
  if (c.type == NBD_CMD_FLUSH) {
    /* It was to cover writes acknowledged on the connection that died
     * (pool_conn_dead has counted them as at risk); on another one it
     * would succeed without covering them. */
    c.done (c.opaque, EIO);
    return;
  }
  if (++c.retries > POOL_MAX_RETRIES) {
    g_warning ("giving up on %s at offset %" G_GUINT64_FORMAT " after %u "
               "lost connections: EIO", nbdc_cmd_name (c.type), c.offset,
               POOL_MAX_RETRIES);
    c.done (c.opaque, EIO);
    return;
  }
  if (!pool_park (pool, &c, FALSE))
    pool_resubmit (pool, &c);
}

typedef struct {
  NbdPool *pool;
  unsigned idx;
} Reconnect;

/* Re-opens connection idx with backoff until cfg.reconnect seconds have
 * passed, swaps it in, then resubmits everything parked meanwhile. */
static gpointer
pool_reconnect_thread (gpointer data)
{
  Reconnect *r = data;
  NbdPool *pool = r->pool;
  unsigned i = r->idx;
  g_free (r);
  gint64 start = g_get_monotonic_time ();
  gint64 deadline = start + (gint64) pool->cfg.reconnect * G_USEC_PER_SEC;
  gint64 delay = G_USEC_PER_SEC / 10;
  gboolean ok = FALSE;
  unsigned attempts = 0;

  g_warning ("connection %u lost; reconnecting for up to %u s", i + 1,
             pool->cfg.reconnect);
  /* A server on its way down may still accept connections without ever
   * answering: keep each attempt short. */
  NbdcOptions ropts = pool->opts;
  if (ropts.handshake_timeout == 0 || ropts.handshake_timeout > 5)
    ropts.handshake_timeout = 5;
  for (;;) {
    g_mutex_lock (&pool->lock);
    gboolean closing = pool->closing;
    if (pool->cut_at && pool->cut_at < deadline)
      deadline = pool->cut_at;
    g_mutex_unlock (&pool->lock);
    if (closing || (attempts > 0 && g_get_monotonic_time () >= deadline))
      break;
    NbdExport e = { 0 };
    GError *error = NULL;
    attempts++;
    NbdTransport *t = nbdc_open (&ropts, &e, &error);
    g_autofree char *weaker = t ? pool_weaker (pool, &e) : NULL;
    if (weaker && e.size == pool->exp.size && e.eflags == pool->exp.eflags) {
      /* Maybe a server still starting up, or one behind a balancer:
       * a failed attempt; the next may find the right one. */
      g_warning ("connection %u: reconnect attempt %u refused: %s", i + 1,
                 attempts, weaker);
      nbdc_transport_free (t);
      nbdc_export_clear (&e);
      t = NULL;
      g_set_error (&error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL, "%s", weaker);
    }
    else if (weaker) {
      g_warning ("connection %u: %s while we were away; giving up", i + 1,
                 weaker);
      nbdc_transport_free (t);
      nbdc_export_clear (&e);
      break;
    }
    if (t) {
      NbdConn *c = pool_conn_new (pool, t, &e, i);
      nbdc_export_clear (&e);
      g_mutex_lock (&pool->lock);
      gboolean aborted = pool->aborted;
      if (!aborted) {
        g_ptr_array_add (pool->retired, CONN (pool, i));
        g_atomic_pointer_set (&pool->conns[i], c);
      }
      g_mutex_unlock (&pool->lock);
      if (aborted) {
        nbdc_conn_free (c);
        break;
      }
      g_message ("connection %u re-established after %.1f s (%u attempts)",
                 i + 1, (g_get_monotonic_time () - start) / 1e6, attempts);
      ok = TRUE;
      break;
    }
    /* A server that came back without TLS (or a man in the middle) is
     * worth a warning, not a debug line: we will not use it. */
    if (g_error_matches (error, NBDFS_ERROR, NBDFS_ERROR_TLS_REQUIRED))
      g_warning ("connection %u: reconnect attempt %u refused: %s", i + 1,
                 attempts, error->message);
    else
      g_debug ("connection %u: reconnect attempt %u: %s", i + 1, attempts,
               error->message);
    g_error_free (error);
    gint64 now = g_get_monotonic_time ();
    if (now >= deadline)
      break;
    gint64 until = MIN (now + delay, deadline);
    g_mutex_lock (&pool->lock);
    for (;;) {
      if (pool->cut_at && pool->cut_at < until)
        until = pool->cut_at;
      if (pool->closing || g_get_monotonic_time () >= until)
        break;
      g_cond_wait_until (&pool->recond, &pool->lock, until);
    }
    g_mutex_unlock (&pool->lock);
    delay = MIN (delay * 2, G_USEC_PER_SEC);
  }
  g_mutex_lock (&pool->lock);
  gboolean closing = pool->closing;
  g_mutex_unlock (&pool->lock);
  if (!ok && !closing)
    g_warning ("connection %u: could not reconnect (%u attempts); its "
               "requests fail with EIO", i + 1, attempts);

  GQueue parked = G_QUEUE_INIT;
  g_mutex_lock (&pool->lock);
  if (!ok)
    pool->probe_after = g_get_monotonic_time () + G_USEC_PER_SEC;
  pool->reconnecting--;
  /* Only the last reconnect thread hands the parked commands on; with
   * others still at work, they keep waiting for those. */
  if (pool->reconnecting == 0) {
    parked = pool->parked;
    g_queue_init (&pool->parked);
  }
  g_mutex_unlock (&pool->lock);
  Parked *p;
  while ((p = g_queue_pop_head (&parked))) {
    if (p->fresh)
      pool_send_cmd (pool, &p->cmd);
    else
      pool_resubmit (pool, &p->cmd);
    g_free (p);
  }
  return NULL;
}

/* One attempt for every dead connection (the first failure ends it):
 * requests meanwhile fail at once, as they did before the probe. */
static gpointer
pool_probe_thread (gpointer data)
{
  NbdPool *pool = data;
  NbdcOptions ropts = pool->opts;
  if (ropts.handshake_timeout == 0 || ropts.handshake_timeout > 5)
    ropts.handshake_timeout = 5;
  for (unsigned i = 0; i < pool->n; i++) {
    g_mutex_lock (&pool->lock);
    gboolean stop = pool->closing || pool->cut_at || pool->reconnecting > 0;
    g_mutex_unlock (&pool->lock);
    if (stop)
      break;
    if (nbdc_conn_is_alive (CONN (pool, i)))
      continue;
    NbdExport e = { 0 };
    GError *error = NULL;
    NbdTransport *t = nbdc_open (&ropts, &e, &error);
    if (!t) {
      g_debug ("connection %u: probe: %s", i + 1, error->message);
      g_error_free (error);
      break;
    }
    g_autofree char *weaker = pool_weaker (pool, &e);
    if (weaker) {
      g_warning ("connection %u: not re-established: %s", i + 1, weaker);
      nbdc_transport_free (t);
      nbdc_export_clear (&e);
      break;
    }
    NbdConn *c = pool_conn_new (pool, t, &e, i);
    nbdc_export_clear (&e);
    /* Only a slot nobody else is re-opening (a reconnect that started
     * meanwhile owns its slot). */
    g_mutex_lock (&pool->lock);
    gboolean take = !pool->closing && !pool->aborted
      && pool->reconnecting == 0 && !nbdc_conn_is_alive (CONN (pool, i));
    if (take) {
      g_ptr_array_add (pool->retired, CONN (pool, i));
      g_atomic_pointer_set (&pool->conns[i], c);
    }
    g_mutex_unlock (&pool->lock);
    if (!take) {
      nbdc_conn_free (c);
      break;
    }
    g_message ("connection %u re-established: the server is back", i + 1);
  }
  g_mutex_lock (&pool->lock);
  pool->probe_after = g_get_monotonic_time () + G_USEC_PER_SEC;
  pool->probing = FALSE;
  g_mutex_unlock (&pool->lock);
  return NULL;
}

static void
pool_probe (NbdPool *pool)
{
  if (!pool->cfg.reconnect)
    return;
  g_mutex_lock (&pool->lock);
  if (pool->closing || pool->aborted || pool->cut_at
      || pool->reconnecting > 0 || pool->probing || g_get_monotonic_time () < pool->probe_after) {
    g_mutex_unlock (&pool->lock);
    return;
  }
  GThread *old = pool->prober;
  pool->probing = TRUE;
  pool->prober = g_thread_new ("nbd-probe", pool_probe_thread, pool);
  g_mutex_unlock (&pool->lock);
  /* It cleared `probing` as its last act: this join does not wait. */
  if (old)
    g_thread_join (old);
}

static void
pool_conn_dead (void *opaque, NbdConn *conn)
{
  NbdPool *pool = opaque;
  g_mutex_lock (&pool->lock);
  int idx = -1;
  for (unsigned i = 0; i < pool->n; i++)
    if (CONN (pool, i) == conn)
      idx = i;
  /* Before its requests are salvaged or failed (conn.c calls us first),
   * so a flush that was on it already sees the loss. */
  if (idx >= 0 && pool->unflushed_writes[idx] > 0) {
    g_autofree char *name = g_strdup_printf ("connection %d", idx + 1);
    pool_record_loss_locked (pool, name, pool->unflushed_writes[idx],
                             pool->unflushed_bytes[idx], "died");
    pool->unflushed_writes[idx] = 0;
    pool->unflushed_bytes[idx] = 0;
  }
  if (!pool->cfg.reconnect || pool->closing || pool->aborted || idx < 0) {
    g_mutex_unlock (&pool->lock);
    return;
  }
  /* A server going down says ESHUTDOWN on one connection; the others
   * (maybe idle, keeping it waiting) say goodbye too. */
  if (nbdc_conn_saw_eshutdown (conn))
    for (unsigned i = 0; i < pool->n; i++)
      if ((int) i != idx)
        nbdc_conn_soft_disconnect (CONN (pool, i), "the server is shutting "
                                   "down (NBD_ESHUTDOWN on another "
                                   "connection)");
  GThread *prev = pool->rethreads[idx];
  pool->reconnecting++;
  Reconnect *r = g_new (Reconnect, 1);
  *r = (Reconnect) { pool, idx };
  pool->rethreads[idx] = g_thread_new ("nbd-reconnect",
                                       pool_reconnect_thread, r);
  g_mutex_unlock (&pool->lock);
  /* The previous reconnect of this slot made `conn`; it is done or about
   * to be (at most handing on parked commands). */
  if (prev)
    g_thread_join (prev);
}

void
nbdc_pool_limit_reconnect (NbdPool *pool, unsigned seconds)
{
  gint64 at = g_get_monotonic_time () + (gint64) seconds * G_USEC_PER_SEC;
  g_mutex_lock (&pool->lock);
  if (pool->cut_at == 0 || at < pool->cut_at)
    pool->cut_at = at;
  gboolean busy = pool->reconnecting > 0;
  g_cond_broadcast (&pool->recond);
  g_mutex_unlock (&pool->lock);
  if (busy)
    g_message ("shutting down: waiting at most %u s for the server to come "
               "back", seconds);
}

NbdPool *
nbdc_pool_open (const NbdcOptions *opts, const NbdcPoolConfig *cfg,
                NbdExport *exp, GError **error)
{
  NbdExport first = { 0 };
  NbdTransport *t = nbdc_open (opts, &first, error);
  if (!t)
    return NULL;

  gboolean multi = (first.eflags & NBD_FLAG_CAN_MULTI_CONN) != 0;
  unsigned n = cfg->connections ? cfg->connections : multi ? 4 : 1;
  if (n > 1 && !multi) {
    nbdc_transport_free (t);
    nbdc_export_clear (&first);
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "the server does not allow more than one connection to "
                 "this export (no NBD_FLAG_CAN_MULTI_CONN); use 1 connection");
    return NULL;
  }

  NbdPool *pool = g_new0 (NbdPool, 1);
  g_mutex_init (&pool->lock);
  g_cond_init (&pool->cond);
  pool->cfg = *cfg;
  nbdc_options_copy (&pool->opts, opts);
  /* A first connection in TLS makes TLS required from now on: --tls=on
   * (opportunistic) must not let a man in the middle bring the later
   * connections and reconnects back in clear text. */
  if (first.tls)
    pool->opts.tls = NBDC_TLS_REQUIRE;
  pool->exp = first;
  pool->read_only = cfg->read_only
    || (first.eflags & NBD_FLAG_READ_ONLY) != 0;
  pool->base_allocation = first.base_allocation;
  pool->extended = first.extended;
  uint32_t min = MAX (first.min_block, 1);
  uint32_t max = MIN (first.max_block ? first.max_block
                      : NBD_DEFAULT_MAX_PAYLOAD, NBD_DEFAULT_MAX_PAYLOAD);
  max -= max % min;
  pool->max_payload = MAX (max, min);
  /* "Size constraints": offset and length MUST be multiples of the minimum
   * block and MUST NOT pass the export size, so the bytes after the last
   * whole block cannot be reached ("the client would be unable to access
   * the final few bytes"; the size SHOULD be a multiple). Expose what we
   * can address, as kernel mode does with its block size. */
  pool->size = first.size - first.size % min;
  if (pool->size != first.size)
    g_warning ("the export's size (%" G_GUINT64_FORMAT " bytes) is not a "
               "multiple of its minimum block size (%u): the last %"
               G_GUINT64_FORMAT " bytes cannot be addressed; using %"
               G_GUINT64_FORMAT " bytes", first.size, min,
               first.size - pool->size, pool->size);
  pool->conns = g_new0 (NbdConn *, n);
  pool->unflushed_writes = g_new0 (guint64, n);
  pool->unflushed_bytes = g_new0 (guint64, n);
  g_queue_init (&pool->ranges);
  g_cond_init (&pool->recond);
  g_queue_init (&pool->parked);
  pool->rethreads = g_new0 (GThread *, n);
  pool->retired = g_ptr_array_new ();
  pool->conns[0] = pool_conn_new (pool, t, &first, 0);
  pool->n = 1;

  /* Extra connections are an optimisation when the user did not ask for
   * a number: a server may advertise CAN_MULTI_CONN and still cap its
   * clients (qemu-nbd --shared=2 leaves the third connection unanswered
   * in its listen queue), so give each one a short deadline and carry on
   * with what we have. An explicit -C N is a request: fail instead. */
  NbdcOptions extra_opts = pool->opts;
  if (cfg->connections == 0
      && (extra_opts.handshake_timeout == 0
          || extra_opts.handshake_timeout > 5))
    extra_opts.handshake_timeout = 5;
  for (unsigned i = 1; i < n; i++) {
    NbdExport e = { 0 };
    g_autoptr (GError) extra_error = NULL;
    t = nbdc_open (&extra_opts, &e, &extra_error);
    if (!t && cfg->connections == 0) {
      g_warning ("using %u connection%s: connection %u of %u failed: %s",
                 i, i == 1 ? "" : "s", i + 1, n, extra_error->message);
      break;
    }
    if (!t) {
      g_propagate_prefixed_error (error, g_steal_pointer (&extra_error),
                                  "opening connection %u of %u: ", i + 1, n);
      pool_free (pool);
      return NULL;
    }
    if (!e.base_allocation)
      pool->base_allocation = FALSE;
    if (!e.extended)
      pool->extended = FALSE;
    g_autofree char *weaker = pool_weaker (pool, &e);
    if (weaker) {
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                   "connection %u disagrees with connection 1 about the "
                   "export: %s", i + 1, weaker);
      nbdc_transport_free (t);
      nbdc_export_clear (&e);
      pool_free (pool);
      return NULL;
    }
    /* Each connection keeps its own negotiated context id. */
    pool->conns[i] = pool_conn_new (pool, t, &e, i);
    pool->n = i + 1;
    nbdc_export_clear (&e);
  }
  if (exp) {
    nbdc_export_copy (exp, &pool->exp);
    exp->size = pool->size;
  }
  return pool;
}

void
nbdc_pool_abort (NbdPool *pool, const char *reason)
{
  g_mutex_lock (&pool->lock);
  pool->aborted = TRUE;
  pool->cut_at = g_get_monotonic_time ();
  g_cond_broadcast (&pool->recond);
  g_mutex_unlock (&pool->lock);
  for (unsigned i = 0; i < pool->n; i++)
    nbdc_conn_kill (CONN (pool, i), reason);
}

static void
pool_abort_late (NbdPool *pool)
{
  nbdc_pool_abort (pool, "shutting down: the server did not answer in time");
}

int
nbdc_pool_close_until (NbdPool *pool, gint64 deadline)
{
  if (!pool)
    return 0;
  g_mutex_lock (&pool->lock);
  while (pool->outstanding > 0) {
    if (deadline == 0)
      g_cond_wait (&pool->cond, &pool->lock);
    else if (!g_cond_wait_until (&pool->cond, &pool->lock, deadline)) {
      g_mutex_unlock (&pool->lock);
      pool_abort_late (pool);
      g_mutex_lock (&pool->lock);
      deadline = 0;           /* everything ends with EIO now */
    }
  }
  gboolean dirty = FALSE;
  for (unsigned i = 0; i < pool->n; i++)
    dirty |= pool->unflushed_writes[i] > 0;
  g_mutex_unlock (&pool->lock);
  /* A loss nobody was told about (no fsync or close since) is reported
   * here. (FUSE mode also asks each description still open.) */
  guint wb = (guint) g_atomic_int_get (&pool->wb_err);
  int err = wb != 0 && !(wb & WB_SEEN) ? EIO : 0;
  if (dirty) {
    SyncWait w;
    SYNC_INIT (w);
    nbdc_pool_flush (pool, sync_done, &w);
    g_mutex_lock (&w.lock);
    while (!w.done) {
      if (deadline == 0)
        g_cond_wait (&w.cond, &w.lock);
      else if (!g_cond_wait_until (&w.cond, &w.lock, deadline)) {
        g_mutex_unlock (&w.lock);
        pool_abort_late (pool);
        g_mutex_lock (&w.lock);
        deadline = 0;
      }
    }
    g_mutex_unlock (&w.lock);
    int ferr = sync_wait (&w);
    if (!err)
      err = ferr;
  }
  pool_free (pool);
  return err;
}

int
nbdc_pool_close (NbdPool *pool)
{
  return nbdc_pool_close_until (pool, 0);
}
