/* nbdfs — spreading commands over the connections: the least-loaded
 * live one, each write counted against the connection that acknowledged
 * it (pool-flush.c).
 */

#include <errno.h>
#include <string.h>
#include "nbdclient/error.h"
#include "nbdclient/names.h"
#include "nbdclient/pool-internal.h"
#include "nbdclient/protocol.h"

/* Runs on w->conn's reader, so before that connection's dead callback
 * (pool_conn_dead) takes stock of what it leaves unflushed. */
void
pool_write_tracked (void *opaque, int err)
{
  WriteTrack *w = opaque;
  if (!err) {
    NbdPool *pool = w->pool;
    g_mutex_lock (&pool->lock);
    if (pool->serial[w->idx] == w->serial) {
      pool->unflushed_writes[w->idx]++;
      pool->unflushed_bytes[w->idx] += w->count;
    }
    else {
      /* Acknowledged on a connection already replaced: no flush can
       * reach it any more. */
      g_autofree char *name = g_strdup_printf ("connection %u", w->idx + 1);
      pool_record_loss_locked (pool, name, 1, w->count, "was replaced");
    }
    g_atomic_int_add (&pool->tracking[w->idx], -1);
    g_mutex_unlock (&pool->lock);
  }
  else
    g_atomic_int_add (&w->pool->tracking[w->idx], -1);
  w->done (w->opaque, err);
  g_free (w);
}

int
pool_pick (NbdPool *pool, NbdConn **conn, guint64 *serial)
{
  int best = -1, retiring = -1;
  unsigned best_load = 0;
  g_mutex_lock (&pool->lock);
  unsigned start = pool->rr++;
  for (unsigned k = 0; k < pool->n; k++) {
    unsigned i = (start + k) % pool->n;
    NbdConn *c = pool->conns[i];
    if (!c || !nbdc_conn_is_alive (c))
      continue;
    if (pool->retiring[i]) {
      /* Being closed for idleness: only if it is all we have (then the
       * manager, finding a user, keeps it). */
      retiring = i;
      continue;
    }
    unsigned load = nbdc_conn_load (c);
    if (best < 0 || load < best_load) {
      best = i;
      best_load = load;
    }
  }
  if (best < 0)
    best = retiring;
  if (best >= 0) {
    g_atomic_int_inc (&pool->users[best]);
    pool->last_used[best] = g_get_monotonic_time ();
    *conn = pool->conns[best];
    *serial = pool->serial[best];
    if (pool->on_demand)
      pool_maybe_grow_locked (pool, best_load);
  }
  g_mutex_unlock (&pool->lock);
  return best;
}

void
pool_unpick (NbdPool *pool, int i)
{
  g_atomic_int_add (&pool->users[i], -1);
}

static void
pool_send_on (NbdPool *pool, unsigned i, NbdConn *conn, guint64 serial,
              const NbdcCmd *cmd)
{
  /* A command sent with FUA is persisted before its reply (nbd-proto.md,
   * "Command flags"), so it leaves nothing for a later flush: O_DSYNC
   * writes followed by fsync then cost one round trip, not two. */
  if ((cmd->type == NBD_CMD_WRITE || cmd->type == NBD_CMD_WRITE_ZEROES
       || cmd->type == NBD_CMD_TRIM)
      && !(cmd->flags & NBD_CMD_FLAG_FUA)) {
    WriteTrack *w = g_new (WriteTrack, 1);
    *w = (WriteTrack) { pool, i, serial, cmd->count, cmd->done,
                        cmd->opaque };
    /* (We hold a pick on slot i: the manager cannot close it before
     * this is counted.) */
    g_atomic_int_inc (&pool->tracking[i]);
    NbdcCmd c = *cmd;
    c.done = pool_write_tracked;
    c.opaque = w;
    nbdc_conn_submit (conn, &c);
    return;
  }
  nbdc_conn_submit (conn, cmd);
}

void
pool_send_cmd (NbdPool *pool, const NbdcCmd *cmd)
{
  NbdConn *conn;
  guint64 serial;
  int i = pool_pick (pool, &conn, &serial);
  if (i < 0) {
    if (!pool_park (pool, cmd, TRUE)) {
      cmd->done (cmd->opaque, EIO);
      pool_probe (pool);
    }
    return;
  }
  pool_send_on (pool, i, conn, serial, cmd);
  pool_unpick (pool, i);
}
