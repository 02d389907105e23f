/* nbdfs — a lost connection: its requests salvaged and parked, the
 * connection re-opened with backoff (pool_reconnect_thread), and after a
 * reconnect gave up, a quick probe when a request finds no connection.
 */

#include <errno.h>
#include <string.h>
#include "nbdclient/error.h"
#include "nbdclient/names.h"
#include "nbdclient/pool-internal.h"
#include "nbdclient/protocol.h"

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
char *
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

/* A command handed back by a dead connection, or parked during a
 * reconnect: onto any live connection, else EIO. Its done function is
 * already the tracking one (pool_send_on), so it goes to the connection
 * as it is. */
void
pool_resubmit (NbdPool *pool, const NbdcCmd *cmd)
{
  NbdConn *conn;
  guint64 serial;
  int i = pool_pick (pool, &conn, &serial);
  if (i < 0) {
    if (!pool_park (pool, cmd, FALSE)) {
      cmd->done (cmd->opaque, EIO);
      pool_probe (pool);
    }
    return;
  }
  if (cmd->done == pool_write_tracked) {
    /* Its acknowledgement will come from this connection. */
    WriteTrack *w = cmd->opaque;
    g_atomic_int_inc (&pool->tracking[i]);
    g_atomic_int_add (&pool->tracking[w->idx], -1);
    w->idx = i;
    w->serial = serial;
  }
  nbdc_conn_submit (conn, cmd);
  pool_unpick (pool, i);
}

typedef struct {
  NbdcCmd cmd;
  gboolean fresh;             /* from pool_send_cmd: not yet tracked */
} Parked;

gboolean
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

void
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

/* What one attempt to re-open a connection came to. */
typedef enum {
  REOPEN_DONE,                /* the new connection is in the slot */
  REOPEN_FAILED,              /* none opened (*error says why) */
  REOPEN_REFUSED,             /* the same export, but weaker than the
                                 pool's (*error): maybe a server still
                                 starting up, or one behind a balancer */
  REOPEN_CHANGED,             /* the export changed size or flags */
  REOPEN_NOT_TAKEN,           /* the slot was no longer ours to fill */
} Reopen;

/* The one way a lost connection comes back (the reconnect thread and the
 * prober): opens and negotiates a new one for slot i, with a short
 * handshake (a server on its way down may still accept connections
 * without ever answering), checks it against the pool (pool_weaker), and
 * under pool->lock swaps it in and retires the dead one, unless the pool
 * was aborted meanwhile, or, for the prober (probe), it is closing, a
 * reconnect started (that owns the slot) or the slot is alive again. */
static Reopen
pool_reopen (NbdPool *pool, unsigned i, gboolean probe, GError **error)
{
  NbdcOptions ropts = pool->opts;
  if (ropts.handshake_timeout == 0 || ropts.handshake_timeout > 5)
    ropts.handshake_timeout = 5;
  NbdExport e = { 0 };
  NbdTransport *t = nbdc_open (&ropts, &e, error);
  if (!t)
    return REOPEN_FAILED;
  g_autofree char *weaker = pool_weaker (pool, &e);
  if (weaker) {
    Reopen r = e.size == pool->exp.size && e.eflags == pool->exp.eflags
      ? REOPEN_REFUSED : REOPEN_CHANGED;
    g_set_error_literal (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL, weaker);
    nbdc_transport_free (t);
    nbdc_export_clear (&e);
    return r;
  }
  NbdConn *c = pool_conn_new (pool, t, &e, i);
  nbdc_export_clear (&e);
  g_mutex_lock (&pool->lock);
  /* (A slot being reconnected holds its dead connection: only an alive
   * one is emptied by the manager. The prober skips empty slots.) */
  gboolean take = !pool->aborted && pool->conns[i] != NULL
    && (!probe || (!pool->closing && pool->reconnecting == 0
                   && !nbdc_conn_is_alive (pool->conns[i])));
  if (take) {
    g_ptr_array_add (pool->retired, pool->conns[i]);
    g_atomic_pointer_set (&pool->conns[i], c);
    pool->serial[i] = pool_new_serial_locked (pool);
  }
  g_mutex_unlock (&pool->lock);
  if (!take) {
    nbdc_conn_free (c);
    return REOPEN_NOT_TAKEN;
  }
  return REOPEN_DONE;
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
  for (;;) {
    g_mutex_lock (&pool->lock);
    gboolean closing = pool->closing;
    if (pool->cut_at && pool->cut_at < deadline)
      deadline = pool->cut_at;
    g_mutex_unlock (&pool->lock);
    if (closing || (attempts > 0 && g_get_monotonic_time () >= deadline))
      break;
    GError *error = NULL;
    attempts++;
    Reopen how = pool_reopen (pool, i, FALSE, &error);
    if (how == REOPEN_DONE) {
      g_message ("connection %u re-established after %.1f s (%u attempts)",
                 i + 1, (g_get_monotonic_time () - start) / 1e6, attempts);
      ok = TRUE;
      break;
    }
    if (how == REOPEN_NOT_TAKEN)
      break;                  /* aborted */
    if (how == REOPEN_CHANGED) {
      g_warning ("connection %u: %s while we were away; giving up", i + 1,
                 error->message);
      g_error_free (error);
      break;
    }
    /* A weaker server (the next attempt may find the right one), or one
     * that came back without TLS (or a man in the middle), is worth a
     * warning, not a debug line: we will not use it. */
    if (how == REOPEN_REFUSED
        || g_error_matches (error, NBDFS_ERROR, NBDFS_ERROR_TLS_REQUIRED))
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
  for (unsigned i = 0;; i++) {
    g_mutex_lock (&pool->lock);
    gboolean stop = pool->closing || pool->cut_at || pool->reconnecting > 0
      || i >= pool->n;
    /* An empty slot (an idle extra closed) is not a lost connection. */
    gboolean skip = !stop && (pool->conns[i] == NULL
                              || nbdc_conn_is_alive (pool->conns[i]));
    g_mutex_unlock (&pool->lock);
    if (stop)
      break;
    if (skip)
      continue;
    GError *error = NULL;
    Reopen r = pool_reopen (pool, i, TRUE, &error);
    if (r == REOPEN_FAILED)
      g_debug ("connection %u: probe: %s", i + 1, error->message);
    else if (r != REOPEN_DONE && error)
      g_warning ("connection %u: not re-established: %s", i + 1,
                 error->message);
    g_clear_error (&error);
    if (r != REOPEN_DONE)
      break;
    g_message ("connection %u re-established: the server is back", i + 1);
  }
  g_mutex_lock (&pool->lock);
  pool->probe_after = g_get_monotonic_time () + G_USEC_PER_SEC;
  pool->probing = FALSE;
  g_mutex_unlock (&pool->lock);
  return NULL;
}

void
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

void
pool_conn_dead (void *opaque, NbdConn *conn)
{
  NbdPool *pool = opaque;
  g_mutex_lock (&pool->lock);
  int idx = -1;
  /* Not found: an idle extra the manager took out of its slot (closed
   * cleanly, nothing unflushed): not a loss, nothing to reconnect. */
  for (unsigned i = 0; i < pool->n; i++)
    if (pool->conns[i] == conn)
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
      if ((int) i != idx && pool->conns[i])
        nbdc_conn_soft_disconnect (pool->conns[i], "the server is shutting "
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
