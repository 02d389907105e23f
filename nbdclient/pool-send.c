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
int
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
    c.done = pool_write_tracked;
    c.opaque = w;
    nbdc_conn_submit (CONN (pool, i), &c);
    return;
  }
  nbdc_conn_submit (CONN (pool, i), cmd);
}

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
