/* nbdfs — connections on demand (NbdcPoolConfig.on_demand).
 *
 * The pool opens connection 1 only; `cap` (-C N, or 4 under
 * NBD_FLAG_CAN_MULTI_CONN) is the most it will have. One manager thread
 * per pool does the rest, never on the data path:
 *  - growth: pool_pick, finding every live connection busy, asks for one
 *    more; the manager opens it (one at a time) with the same
 *    negotiation and the same check against the pool (pool_weaker) as a
 *    reconnect, and puts it in the lowest empty slot. A failure, or a
 *    server that accepts and never greets (a short handshake deadline),
 *    is a warning once and growth rests for a while: a server at its
 *    connection limit (qemu-nbd --shared=N leaves the next connection
 *    unanswered in its listen queue; nbdkit's limit filter closes it) is
 *    no reason to fail a request, nor to knock on every one.
 *  - idle close: an extra connection (slot > 0) that nothing was sent on
 *    for idle_us is flushed if it holds acknowledged, unflushed writes,
 *    and only if that flush succeeded taken out of its slot and closed
 *    with NBD_CMD_DISC (nbd-proto.md "Terminating the transmission
 *    phase"). Connection 1 always stays. An emptied slot is not a lost
 *    connection: pool_conn_dead does not find it, so no loss is recorded
 *    and nothing reconnects it.
 * Locking: pool-internal.h (pool->lock guards the slots).
 */

#include <errno.h>
#include <string.h>
#include "nbdclient/error.h"
#include "nbdclient/names.h"
#include "nbdclient/pool-internal.h"
#include "nbdclient/protocol.h"

/* Grow when the least-loaded live connection already has this many
 * requests queued or in flight. One connection is one sender and one
 * reader thread on our side and one connection's worth of threads on the
 * server's; a few requests in its pipe keep them busy and hide the round
 * trip. Measured (2-core machine, nbdkit memory over a Unix socket, fio
 * 4K random reads, libaio, O_DIRECT; busy machine, so rough): one
 * connection gave 8.2k IOPS at queue depth 1, 11.2k at 2, 14.2k at 4,
 * 19.6k at 8, then less (16.4k at 16, 12.8k at 32) as latency grew; four
 * connections were slower than one up to depth 4 (7.5k at 2, 8.9k at 4:
 * more threads to wake on 2 cores) and faster from 16 on (18.7k at 16,
 * 18.0k at 32). So a connection takes up to 8 before another opens: a
 * shallow queue (a queue-depth-1 writer, a buffered reader) stays on one
 * connection, and queue depth 32 opens all four. */
#define POOL_GROW_LOAD 8

/* Rest after a failed growth. */
#define POOL_GROW_BACKOFF_US (60 * G_USEC_PER_SEC)

/* The handshake deadline of an extra: a server at its limit may accept
 * and never greet. */
#define POOL_GROW_HANDSHAKE_S 5

guint64
pool_new_serial_locked (NbdPool *pool)
{
  return ++pool->next_serial;
}

void
pool_maybe_grow_locked (NbdPool *pool, unsigned best_load)
{
  if (best_load < POOL_GROW_LOAD || pool->grow_wanted
      || pool->open_slots >= pool->cap || pool->closing || pool->aborted
      || g_get_monotonic_time () < pool->grow_after)
    return;
  pool->grow_wanted = TRUE;
  g_cond_signal (&pool->mgr_cond);
}

/* Growth may be asked for again from `after` (monotonic us) on. */
static void
pool_grow_done (NbdPool *pool, gint64 after)
{
  g_mutex_lock (&pool->lock);
  pool->grow_after = after;
  pool->grow_wanted = FALSE;
  g_mutex_unlock (&pool->lock);
}

/* Opens one more connection into the lowest empty slot. *warned: a
 * failure was already reported (until a success). */
static void
pool_grow (NbdPool *pool, gboolean *warned)
{
  g_mutex_lock (&pool->lock);
  int slot = -1;
  for (unsigned i = 1; i < pool->cap && slot < 0; i++)
    if (pool->conns[i] == NULL)
      slot = i;
  unsigned have = pool->open_slots;
  /* No other growth until this one is done (pool_maybe_grow_locked). */
  pool->grow_after = G_MAXINT64;
  g_mutex_unlock (&pool->lock);
  if (slot < 0) {
    pool_grow_done (pool, 0);
    return;
  }

  NbdcOptions o = pool->opts;
  if (o.handshake_timeout == 0 || o.handshake_timeout > POOL_GROW_HANDSHAKE_S)
    o.handshake_timeout = POOL_GROW_HANDSHAKE_S;
  NbdExport e = { 0 };
  g_autoptr (GError) error = NULL;
  NbdTransport *t = nbdc_open (&o, &e, &error);
  g_autofree char *weaker = t ? pool_weaker (pool, &e) : NULL;
  if (!t || weaker) {
    if (!*warned)
      g_warning ("could not open connection %d (of up to %u; using %u): "
                 "%s%s%s; trying again in %d s", slot + 1, pool->cap, have,
                 t ? "it disagrees with connection 1 about the export: "
                 : "", t ? weaker : error->message,
                 !t && !strstr (error->message, "connection limit")
                 ? "; the server may be at its connection limit" : "",
                 (int) (POOL_GROW_BACKOFF_US / G_USEC_PER_SEC));
    else
      g_debug ("connection %d: %s", slot + 1, t ? weaker : error->message);
    *warned = TRUE;
    if (t)
      nbdc_transport_free (t);
    nbdc_export_clear (&e);
    pool_grow_done (pool, g_get_monotonic_time () + POOL_GROW_BACKOFF_US);
    return;
  }
  NbdConn *c = pool_conn_new (pool, t, &e, slot);
  nbdc_export_clear (&e);
  g_mutex_lock (&pool->lock);
  gboolean take = !pool->closing && !pool->aborted;
  if (take) {
    g_atomic_pointer_set (&pool->conns[slot], c);
    pool->serial[slot] = pool_new_serial_locked (pool);
    pool->last_used[slot] = g_get_monotonic_time ();
    pool->unflushed_writes[slot] = 0;
    pool->unflushed_bytes[slot] = 0;
    pool->open_slots++;
    pool->n = MAX (pool->n, (unsigned) slot + 1);
    have = pool->open_slots;
  }
  g_mutex_unlock (&pool->lock);
  if (!take) {
    nbdc_conn_free (c);
    pool_grow_done (pool, 0);
    return;
  }
  if (*warned)
    g_message ("connection %d opened (now %u)", slot + 1, have);
  else
    g_debug ("connection %d opened: the queue is busy (now %u)", slot + 1,
             have);
  *warned = FALSE;
  pool_grow_done (pool, 0);
}

/* Nobody holds a pick on slot i, nothing is on its connection c, no
 * write done on it is still to be counted, and c is alive. pool->lock
 * held: picks and counts change under it. */
static gboolean
pool_slot_idle_locked (NbdPool *pool, unsigned i, NbdConn *c)
{
  return g_atomic_int_get (&pool->users[i]) == 0
    && g_atomic_int_get (&pool->tracking[i]) == 0
    && nbdc_conn_load (c) == 0 && nbdc_conn_is_alive (c);
}

/* Closes the connection in slot i if it is still idle, alive and nobody
 * holds a pick on it; flushes first what it acknowledged unflushed. */
static void
pool_close_idle (NbdPool *pool, unsigned i)
{
  g_mutex_lock (&pool->lock);
  NbdConn *c = pool->conns[i];
  gint64 now = g_get_monotonic_time ();
  if (!c || pool->closing || pool->aborted) {
    g_mutex_unlock (&pool->lock);
    return;
  }
  /* A pick is raised under the lock, so none can start on it once
   * retiring is set below; a request still on it (a long one) or a dead
   * connection (its reconnect or the prober owns the slot) restarts the
   * idle clock. */
  if (!pool_slot_idle_locked (pool, i, c)) {
    pool->last_used[i] = now;
    g_mutex_unlock (&pool->lock);
    return;
  }
  pool->retiring[i] = TRUE;
  guint64 dirty = pool->unflushed_writes[i];
  g_mutex_unlock (&pool->lock);

  /* "Multi-conn": a flush on any connection would do, but this one is
   * the one that answered those writes, and it is free. */
  int err = dirty ? pool_flush_slot_sync (pool, i, c) : 0;

  g_mutex_lock (&pool->lock);
  gboolean go = !err && !pool->closing && !pool->aborted
    && pool->conns[i] == c && pool->unflushed_writes[i] == 0
    && pool_slot_idle_locked (pool, i, c);
  if (go) {
    g_atomic_pointer_set (&pool->conns[i], NULL);
    pool->serial[i] = pool_new_serial_locked (pool);
    pool->open_slots--;
  }
  pool->retiring[i] = FALSE;
  pool->last_used[i] = g_get_monotonic_time ();
  unsigned have = pool->open_slots;
  g_mutex_unlock (&pool->lock);
  if (!go) {
    if (err)
      g_debug ("connection %u: flush before the idle close failed: %s",
               i + 1, g_strerror (err));
    return;
  }
  g_debug ("connection %u idle: closed (now %u)", i + 1, have);
  /* Out of its slot: nothing can reach it. Drains (nothing), sends
   * NBD_CMD_DISC, joins its threads. */
  nbdc_conn_free (c);
}

static gpointer
pool_manager_thread (gpointer data)
{
  NbdPool *pool = data;
  gboolean warned = FALSE;
  g_mutex_lock (&pool->lock);
  while (!pool->closing && !pool->aborted) {
    if (pool->grow_wanted) {
      g_mutex_unlock (&pool->lock);
      pool_grow (pool, &warned);
      g_mutex_lock (&pool->lock);
      continue;
    }
    gint64 now = g_get_monotonic_time ();
    gint64 next = G_MAXINT64;
    int victim = -1;
    for (unsigned i = 1; i < pool->n; i++) {
      if (pool->conns[i] == NULL || pool->retiring[i])
        continue;
      gint64 at = pool->last_used[i] + pool->idle_us;
      if (at <= now && victim < 0)
        victim = i;
      else
        next = MIN (next, at);
    }
    if (victim >= 0) {
      g_mutex_unlock (&pool->lock);
      pool_close_idle (pool, victim);
      g_mutex_lock (&pool->lock);
      continue;
    }
    if (next == G_MAXINT64)
      g_cond_wait (&pool->mgr_cond, &pool->lock);
    else
      g_cond_wait_until (&pool->mgr_cond, &pool->lock, next);
  }
  g_mutex_unlock (&pool->lock);
  return NULL;
}

void
pool_manager_start (NbdPool *pool)
{
  pool->manager = g_thread_new ("nbd-pool", pool_manager_thread, pool);
}
