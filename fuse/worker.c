/* nbdfs — one helper thread for the few ops that need several round trips
 * whose next request depends on the last reply (lseek, the allocation scan
 * behind st_blocks). They are rare, so a single thread waiting on replies
 * costs nothing, and the libfuse workers and the connection readers never
 * block. Created before signals are unblocked, so it never receives
 * SIGTERM (see mount.c).
 */
#include <errno.h>

#include "fuse/fs.h"
#include "nbdclient/protocol.h"

typedef struct {
  NbdfsJobFn fn;              /* NULL = stop */
  void *data;
} Job;

static gpointer
worker_main (gpointer opaque)
{
  NbdfsFs *fs = opaque;

  for (;;) {
    Job *job = g_async_queue_pop (fs->jobs);
    if (job->fn == NULL) {
      g_free (job);
      return NULL;
    }
    job->fn (fs, job->data);
    g_free (job);
  }
}

gboolean
nbdfs_worker_start (NbdfsFs *fs, GError **error)
{
  fs->jobs = g_async_queue_new ();
  fs->worker = g_thread_try_new ("nbdfs-worker", worker_main, fs, error);
  return fs->worker != NULL;
}

void
nbdfs_worker_push (NbdfsFs *fs, NbdfsJobFn fn, void *data)
{
  Job *job = g_new (Job, 1);
  job->fn = fn;
  job->data = data;
  g_async_queue_push (fs->jobs, job);
}

/* Runs the queued jobs to the end, then stops the thread. */
void
nbdfs_worker_stop (NbdfsFs *fs)
{
  if (fs->worker == NULL)
    return;
  g_atomic_int_set (&fs->stopping, TRUE);  /* scans stop re-queueing */
  nbdfs_worker_push (fs, NULL, NULL);
  g_thread_join (fs->worker);
  fs->worker = NULL;
  /* A scan that re-queued itself just before it saw "stopping" sits
   * behind the stop job: run it here (it will not re-queue again). */
  Job *job;
  while ((job = g_async_queue_try_pop (fs->jobs)) != NULL) {
    if (job->fn)
      job->fn (fs, job->data);
    g_free (job);
  }
  g_async_queue_unref (fs->jobs);
  fs->jobs = NULL;
}

/* ---- synchronous block status for the worker ---- */

typedef struct {
  GMutex lock;
  GCond cond;
  gboolean done;
  int err;
  NbdcExtentFn extent;
  void *opaque;
} SyncStatus;

static void
sync_extent (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  SyncStatus *s = opaque;
  s->extent (s->opaque, offset, length, flags);
}

static void
sync_done (void *opaque, int err)
{
  SyncStatus *s = opaque;
  g_mutex_lock (&s->lock);
  s->err = err;
  s->done = TRUE;
  g_cond_signal (&s->cond);
  g_mutex_unlock (&s->lock);
}

int
nbdfs_block_status_sync (NbdfsFile *f, uint64_t offset, uint64_t length,
                         NbdcExtentFn extent, void *opaque)
{
  SyncStatus s = { .extent = extent, .opaque = opaque };

  g_mutex_init (&s.lock);
  g_cond_init (&s.cond);
  nbdc_pool_block_status (f->pool, length, offset, 0, sync_extent, sync_done,
                          &s);
  g_mutex_lock (&s.lock);
  while (!s.done)
    g_cond_wait (&s.cond, &s.lock);
  g_mutex_unlock (&s.lock);
  g_mutex_clear (&s.lock);
  g_cond_clear (&s.cond);
  return s.err;
}

/* ---- st_blocks from base:allocation ---- */

/* Scans at most this often per file. */
#define SCAN_INTERVAL_US (5 * G_USEC_PER_SEC)

typedef struct {
  NbdfsFile *file;
  uint64_t allocated;
  uint64_t pos;               /* where the next query starts */
  uint64_t next;              /* end of the last extent seen */
} ScanState;

static void
scan_extent (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  ScanState *s = opaque;
  if (!(flags & NBD_STATE_HOLE))
    s->allocated += length;
  s->next = offset + length;
}

/* One query per job: a long scan re-queues itself behind whatever came
 * in meanwhile, so an lseek never waits for a whole large export. */
static void
scan_job (NbdfsFs *fs, void *data)
{
  ScanState *s = data;
  NbdfsFile *f = s->file;

  if (s->pos < f->exp.size) {
    /* The pool caps one query at what its header can carry. */
    uint64_t len = f->exp.size - s->pos;
    s->next = s->pos;
    int err = nbdfs_block_status_sync (f, s->pos, len, scan_extent, s);
    if (err || s->next <= s->pos) {
      if (err && fs->debug)
        g_debug ("%s: allocation scan stopped at %" G_GUINT64_FORMAT ": %s",
                 f->name, s->pos, g_strerror (err));
      g_atomic_int_set (&f->scan_queued, 0);
      g_free (s);
      return;                 /* keep what we had */
    }
    s->pos = s->next;
    if (s->pos < f->exp.size && !g_atomic_int_get (&fs->stopping)) {
      nbdfs_worker_push (fs, scan_job, s);
      return;
    }
    if (s->pos < f->exp.size) {
      g_atomic_int_set (&f->scan_queued, 0);
      g_free (s);
      return;
    }
  }
  __atomic_store_n (&f->allocated, (gint64) s->allocated, __ATOMIC_RELAXED);
  __atomic_store_n (&f->allocated_at, g_get_monotonic_time (),
                    __ATOMIC_RELAXED);
  if (fs->debug)
    g_debug ("%s: %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
             " bytes allocated", f->name, s->allocated, f->exp.size);
  g_atomic_int_set (&f->scan_queued, 0);
  g_free (s);
}

void
nbdfs_allocation_refresh (NbdfsFs *fs, NbdfsFile *f)
{
  if (!f->exp.base_allocation || fs->jobs == NULL)
    return;
  gint64 at = __atomic_load_n (&f->allocated_at, __ATOMIC_RELAXED);
  if (at != 0 && g_get_monotonic_time () - at < SCAN_INTERVAL_US)
    return;
  if (!g_atomic_int_compare_and_exchange (&f->scan_queued, 0, 1))
    return;
  ScanState *s = g_new0 (ScanState, 1);
  s->file = f;
  nbdfs_worker_push (fs, scan_job, s);
}
