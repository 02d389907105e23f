/* nbdfs — several connections to one export, used as one (nbd-proto.md
 * "Multi-conn" under NBD_FLAG_CAN_MULTI_CONN, and "Ordering of messages
 * and writes").
 *
 * Flush bookkeeping: a connection becomes dirty when a write-type command
 * *completes* successfully on it, and clean when a flush is sent on it. A
 * write still in flight when a flush starts is therefore not counted as
 * covered (the spec: a client "MUST NOT issue an NBD_CMD_FLUSH request
 * until it has received the reply for all write commands which it expects
 * to be covered by the flush"); its completion marks the connection dirty
 * again for the next flush.
 */
#include <errno.h>
#include <string.h>
#include "nbdclient/error.h"
#include "nbdclient/names.h"
#include "nbdclient/pool-internal.h"
#include "nbdclient/protocol.h"

#define CONN(pool, i) ((NbdConn *) g_atomic_pointer_get (&(pool)->conns[i]))

/* ---- pool-level requests made of parts ---- */

NbdcParent *
pool_parent_new (NbdPool *pool, NbdcDoneFn done, void *opaque)
{
  NbdcParent *p = g_new0 (NbdcParent, 1);
  p->pool = pool;
  p->done = done;
  p->opaque = opaque;
  p->pending = 1;
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
    /* FUA emulation: the write is only acknowledged once flushed. */
    nbdc_pool_flush (p->pool, parent_flushed, p);
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
  unsigned idx;
  NbdcDoneFn done;
  void *opaque;
} WriteTrack;

static void
write_tracked (void *opaque, int err)
{
  WriteTrack *w = opaque;
  if (!err) {
    g_mutex_lock (&w->pool->lock);
    w->pool->dirty[w->idx] = TRUE;
    g_mutex_unlock (&w->pool->lock);
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
    *w = (WriteTrack) { pool, i, cmd->done, cmd->opaque };
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

typedef struct {
  NbdPool *pool;
  unsigned idx;
  NbdcParent *parent;
} FlushPart;

static void
flush_part_done (void *opaque, int err)
{
  FlushPart *f = opaque;
  if (err) {
    /* Not persisted: the next flush must try this connection again. */
    g_mutex_lock (&f->pool->lock);
    f->pool->dirty[f->idx] = TRUE;
    g_mutex_unlock (&f->pool->lock);
  }
  pool_parent_part_done (f->parent, err);
  g_free (f);
}

void
nbdc_pool_flush (NbdPool *pool, NbdcDoneFn done, void *opaque)
{
  if (!(pool->exp.eflags & NBD_FLAG_SEND_FLUSH)) {
    done (opaque, 0);
    return;
  }
  NbdcParent *p = pool_parent_new (pool, done, opaque);
  for (unsigned i = 0; i < pool->n; i++) {
    g_mutex_lock (&pool->lock);
    gboolean dirty = pool->dirty[i];
    pool->dirty[i] = FALSE;
    g_mutex_unlock (&pool->lock);
    if (!dirty)
      continue;
    FlushPart *f = g_new (FlushPart, 1);
    *f = (FlushPart) { pool, i, p };
    pool_parent_add (p);
    NbdcCmd cmd = { .type = NBD_CMD_FLUSH, .done = flush_part_done,
                    .opaque = f };
    nbdc_conn_submit (CONN (pool, i), &cmd);
  }
  pool_parent_release (p);
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
  g_free (pool->dirty);
  nbdc_export_clear (&pool->exp);
  nbdc_options_clear (&pool->opts);
  g_mutex_clear (&pool->lock);
  g_cond_clear (&pool->cond);
  g_free (pool);
}

/* ---- reconnect ---- */

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
  if (pool->cfg.reconnect) {
    cc.salvage = pool_salvage;
    cc.dead = pool_conn_dead;
    cc.opaque = pool;
  }
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
  nbdc_conn_submit (CONN (pool, i), cmd);
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
    if (t && (e.size != pool->exp.size || e.eflags != pool->exp.eflags
              || (pool->extended && !e.extended))) {
      g_warning ("connection %u: the export changed while we were away "
                 "(size %" G_GUINT64_FORMAT " flags 0x%x, %s; was %"
                 G_GUINT64_FORMAT " flags 0x%x, %s); giving up", i + 1,
                 e.size, e.eflags, nbdc_reply_mode_name (&e),
                 pool->exp.size, pool->exp.eflags,
                 nbdc_reply_mode_name (&pool->exp));
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
    if (e.size != pool->exp.size || e.eflags != pool->exp.eflags
        || (pool->extended && !e.extended)) {
      /* (Requests over 4 GiB need the extended headers we had.) */
      g_debug ("connection %u: probe: the export changed (size %"
               G_GUINT64_FORMAT " flags 0x%x)", i + 1, e.size, e.eflags);
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
  if (pool->closing || pool->aborted || idx < 0) {
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
  pool->dirty = g_new0 (gboolean, n);
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
  NbdcOptions extra_opts = *opts;
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
    if (e.size != first.size || e.eflags != first.eflags) {
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                   "connection %u disagrees with connection 1 about the "
                   "export (size %" G_GUINT64_FORMAT " vs %" G_GUINT64_FORMAT
                   ", flags 0x%x vs 0x%x)", i + 1, e.size, first.size,
                   e.eflags, first.eflags);
      nbdc_transport_free (t);
      nbdc_export_clear (&e);
      pool_free (pool);
      return NULL;
    }
    if (!e.base_allocation)
      pool->base_allocation = FALSE;
    if (!e.extended)
      pool->extended = FALSE;
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
    dirty |= pool->dirty[i];
  g_mutex_unlock (&pool->lock);
  int err = 0;
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
    err = sync_wait (&w);
  }
  pool_free (pool);
  return err;
}

int
nbdc_pool_close (NbdPool *pool)
{
  return nbdc_pool_close_until (pool, 0);
}
