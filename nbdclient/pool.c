/* nbdfs — several connections to one export, used as one (nbd-proto.md
 * "Multi-conn" under NBD_FLAG_CAN_MULTI_CONN, and "Ordering of messages
 * and writes").
 *
 * Here: opening the connections, close and abort. The rest of the pool:
 * pool-request.c, pool-send.c, pool-flush.c, pool-sync.c,
 * pool-reconnect.c (pool-internal.h says what they share).
 */

#include <errno.h>
#include <string.h>
#include "nbdclient/error.h"
#include "nbdclient/names.h"
#include "nbdclient/pool-internal.h"
#include "nbdclient/protocol.h"

unsigned
nbdc_pool_connections (NbdPool *pool)
{
  unsigned n = 0;
  g_mutex_lock (&pool->lock);
  for (unsigned i = 0; i < pool->n; i++)
    if (pool->conns[i] && nbdc_conn_is_alive (pool->conns[i]))
      n++;
  g_mutex_unlock (&pool->lock);
  return n;
}

static void
pool_free (NbdPool *pool)
{
  g_mutex_lock (&pool->lock);
  pool->closing = TRUE;
  g_cond_broadcast (&pool->recond);
  g_cond_broadcast (&pool->mgr_cond);
  g_mutex_unlock (&pool->lock);
  /* The manager first: after it, nothing fills or empties a slot. */
  if (pool->manager)
    g_thread_join (pool->manager);
  for (unsigned i = 0; i < pool->n; i++)
    if (pool->rethreads[i])
      g_thread_join (pool->rethreads[i]);
  if (pool->prober)
    g_thread_join (pool->prober);
  for (unsigned i = 0; i < pool->n; i++)
    nbdc_conn_free (CONN (pool, i));   /* NULL (an empty slot) is fine */
  for (guint i = 0; i < pool->retired->len; i++)
    nbdc_conn_free (pool->retired->pdata[i]);
  g_ptr_array_free (pool->retired, TRUE);
  g_free (pool->rethreads);
  g_cond_clear (&pool->recond);
  g_cond_clear (&pool->mgr_cond);
  g_free (pool->conns);
  g_free (pool->serial);
  g_free (pool->users);
  g_free (pool->tracking);
  g_free (pool->last_used);
  g_free (pool->retiring);
  g_free (pool->unflushed_writes);
  g_free (pool->unflushed_bytes);
  nbdc_export_clear (&pool->exp);
  nbdc_options_clear (&pool->opts);
  g_mutex_clear (&pool->lock);
  g_cond_clear (&pool->cond);
  g_free (pool);
}

NbdConn *
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
  pool->cap = n;
  pool->on_demand = cfg->on_demand && n > 1;
  pool->idle_us = (gint64) (cfg->idle_close_ms ? cfg->idle_close_ms
                            : 30000) * 1000;
  pool->conns = g_new0 (NbdConn *, n);
  pool->serial = g_new0 (guint64, n);
  pool->users = g_new0 (gint, n);
  pool->tracking = g_new0 (gint, n);
  pool->last_used = g_new0 (gint64, n);
  pool->retiring = g_new0 (gboolean, n);
  pool->unflushed_writes = g_new0 (guint64, n);
  pool->unflushed_bytes = g_new0 (guint64, n);
  g_queue_init (&pool->ranges);
  g_cond_init (&pool->recond);
  g_cond_init (&pool->mgr_cond);
  g_queue_init (&pool->parked);
  pool->rethreads = g_new0 (GThread *, n);
  pool->retired = g_ptr_array_new ();
  pool->conns[0] = pool_conn_new (pool, t, &first, 0);
  pool->serial[0] = pool_new_serial_locked (pool);
  pool->n = 1;
  pool->open_slots = 1;

  if (pool->on_demand) {
    /* The rest when the queue needs them (pool-grow.c): a mount costs
     * one handshake, and a server shared with other clients keeps the
     * rest of its quota for them while we are idle. */
    pool_manager_start (pool);
    if (exp) {
      nbdc_export_copy (exp, &pool->exp);
      exp->size = pool->size;
    }
    return pool;
  }

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
    /* Under the lock: connection 1's reader (its dead callback) may
     * already scan the slots. */
    NbdConn *c = pool_conn_new (pool, t, &e, i);
    g_mutex_lock (&pool->lock);
    g_atomic_pointer_set (&pool->conns[i], c);
    pool->serial[i] = pool_new_serial_locked (pool);
    pool->n = i + 1;
    pool->open_slots = i + 1;
    g_mutex_unlock (&pool->lock);
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
  g_cond_broadcast (&pool->mgr_cond);
  unsigned n = pool->n;
  g_mutex_unlock (&pool->lock);
  /* Aborted: the manager neither fills nor empties a slot any more, and
   * a reconnect retires what it replaces, so each pointer read here
   * stays valid (pool-internal.h). */
  for (unsigned i = 0; i < n; i++)
    if (CONN (pool, i))
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
    nbdc_pool_flush (pool, pool_sync_done, &w);
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
    int ferr = pool_sync_wait (&w);
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
