/* nbdfs — the pipes large FUSE writes travel in.
 *
 * A loop thread splices a request from /dev/fuse into one of these
 * (loop.c). For a write from the page cache the kernel puts references to
 * the writer's pages into the pipe rather than copies; the write handler
 * keeps the pipe, and the connection duplicates its buffers onto the
 * socket (nbdclient/conn-splice.c), so the payload reaches the server
 * without passing through our memory. The pipe comes back here when the
 * server has answered.
 *
 * A pipe must hold a whole request at once (the kernel fails a request
 * spliced into a pipe with too few free slots, with EIO for the writer):
 * each is sized to NBDFS_PIPE_BYTES, and max_write is cut so that any
 * request fits (fs.h). Where a pipe cannot be sized, nbdfs_pipe_get says
 * NULL and writes go through memory as before.
 *
 * Each pipe costs two descriptors and, for an unprivileged user, counts
 * against /proc/sys/fs/pipe-user-pages-soft (64 MiB of pipes per user by
 * default, shared with the user's other processes): at most
 * NBDFS_PIPES_MAX exist at once (in flight, in loop threads and free);
 * past that, writes go through memory. Guarded by pipes_lock: the free
 * list and the count.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/ioctl.h>

#include "fuse/fs.h"

#define NBDFS_PIPES_MAX 40

static GMutex pipes_lock;
static GSList *pipes_free;          /* pipes_lock */
static unsigned pipes_count;        /* pipes_lock: free + in use */
static int dev_null = -1;           /* pipes_lock for the open */

static void
pipe_close (NbdfsPipe *p)
{
  close (p->fd[0]);
  close (p->fd[1]);
  g_free (p);
}

NbdfsPipe *
nbdfs_pipe_get (void)
{
  g_mutex_lock (&pipes_lock);
  if (pipes_free) {
    NbdfsPipe *p = pipes_free->data;
    pipes_free = g_slist_delete_link (pipes_free, pipes_free);
    g_mutex_unlock (&pipes_lock);
    return p;
  }
  if (pipes_count >= NBDFS_PIPES_MAX) {
    g_mutex_unlock (&pipes_lock);
    return NULL;
  }
  pipes_count++;
  if (dev_null < 0)
    dev_null = open ("/dev/null", O_WRONLY | O_CLOEXEC);
  g_mutex_unlock (&pipes_lock);

  NbdfsPipe *p = g_new (NbdfsPipe, 1);
  if (pipe2 (p->fd, O_CLOEXEC) == 0) {
    if (fcntl (p->fd[1], F_SETPIPE_SZ, NBDFS_PIPE_BYTES) >= NBDFS_PIPE_BYTES)
      return p;
    close (p->fd[0]);
    close (p->fd[1]);
  }
  g_free (p);
  g_mutex_lock (&pipes_lock);
  pipes_count--;
  g_mutex_unlock (&pipes_lock);
  return NULL;
}

/* Drops whatever the pipe still holds (page references: splicing them to
 * /dev/null releases them without reading). FALSE if it could not. */
gboolean
nbdfs_pipe_empty (NbdfsPipe *p)
{
  int avail = 0;
  for (int tries = 0; tries < 8; tries++) {
    if (ioctl (p->fd[0], FIONREAD, &avail) != 0)
      return FALSE;
    if (avail == 0)
      return TRUE;
    ssize_t r = -1;
    if (dev_null >= 0)
      r = splice (p->fd[0], NULL, dev_null, NULL, avail,
                  SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (r <= 0) {
      char junk[4096];
      r = read (p->fd[0], junk, MIN ((size_t) avail, sizeof junk));
      if (r < 0 && errno != EINTR)
        return FALSE;
    }
  }
  return ioctl (p->fd[0], FIONREAD, &avail) == 0 && avail == 0;
}

void
nbdfs_pipe_put (NbdfsPipe *p)
{
  if (p == NULL)
    return;
  if (!nbdfs_pipe_empty (p)) {
    pipe_close (p);
    g_mutex_lock (&pipes_lock);
    pipes_count--;
    g_mutex_unlock (&pipes_lock);
    return;
  }
  g_mutex_lock (&pipes_lock);
  pipes_free = g_slist_prepend (pipes_free, p);
  g_mutex_unlock (&pipes_lock);
}
