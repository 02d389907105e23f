/* nbdfs — a pool-level request made of parts: done runs once, after
 * the last part, with the first error (pool-internal.h NbdcParent).
 */

#include <errno.h>
#include <string.h>
#include "nbdclient/error.h"
#include "nbdclient/names.h"
#include "nbdclient/pool-internal.h"
#include "nbdclient/protocol.h"

NbdcParent *
pool_parent_new (NbdPool *pool, NbdcDoneFn done, void *opaque)
{
  NbdcParent *p = g_new0 (NbdcParent, 1);
  p->pool = pool;
  p->done = done;
  p->opaque = opaque;
  p->pending = 1;
  p->wb_at_start = pool_wb_counter (pool);
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
