/* nbdfs — the synchronous wrappers (pool.h): a request, then a wait for
 * its done callback.
 */

#include <errno.h>
#include <string.h>
#include "nbdclient/error.h"
#include "nbdclient/names.h"
#include "nbdclient/pool-internal.h"
#include "nbdclient/protocol.h"

void
pool_sync_done (void *opaque, int err)
{
  SyncWait *w = opaque;
  g_mutex_lock (&w->lock);
  w->done = TRUE;
  w->err = err;
  g_cond_signal (&w->cond);
  g_mutex_unlock (&w->lock);
}

int
pool_sync_wait (SyncWait *w)
{
  g_mutex_lock (&w->lock);
  while (!w->done)
    g_cond_wait (&w->cond, &w->lock);
  g_mutex_unlock (&w->lock);
  g_mutex_clear (&w->lock);
  g_cond_clear (&w->cond);
  return w->err;
}

int
nbdc_pool_pread_sync (NbdPool *pool, void *buf, size_t count,
                      uint64_t offset)
{
  SyncWait w;
  SYNC_INIT (w);
  nbdc_pool_pread (pool, buf, count, offset, pool_sync_done, &w);
  return pool_sync_wait (&w);
}

int
nbdc_pool_pwrite_sync (NbdPool *pool, const void *buf, size_t count,
                       uint64_t offset, uint32_t flags)
{
  SyncWait w;
  SYNC_INIT (w);
  nbdc_pool_pwrite (pool, buf, count, offset, flags, pool_sync_done, &w);
  return pool_sync_wait (&w);
}

int
nbdc_pool_flush_sync (NbdPool *pool)
{
  SyncWait w;
  SYNC_INIT (w);
  nbdc_pool_flush (pool, pool_sync_done, &w);
  return pool_sync_wait (&w);
}
