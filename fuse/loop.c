/* nbdfs — the FUSE session loop: libfuse's multi-threaded loop, except
 * that a write handler may keep the buffer its request arrived in.
 *
 * libfuse reads each request into a per-thread buffer and reuses it for
 * the next one as soon as the handler returns; an asynchronous write
 * therefore had to copy its payload out. Here each thread owns its
 * receive buffer (malloc'ed by fuse_session_receive_buf when NULL), and
 * nbdfs_loop_take_buffer() hands it to the write in progress: the payload
 * goes from the kernel to the socket without a copy in between, and the
 * thread gets a fresh buffer for its next request.
 *
 * Shape (as fuse_loop_mt.c): NBDFS_LOOP_THREADS threads receive and
 * dispatch; the calling thread waits on a semaphore that a thread posts
 * when it leaves (unmount: ENODEV) and that a signal interrupts (libfuse's
 * handlers set "exited"); then the others, blocked in read(), are
 * cancelled. Dispatching runs with cancellation disabled.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>

#include "fuse/fs.h"

#define NBDFS_LOOP_THREADS 4

static __thread struct fuse_buf *current;
static __thread gboolean taken;

void *
nbdfs_loop_take_buffer (const void *data, size_t len)
{
  if (current == NULL || taken || current->mem == NULL
      || (current->flags & FUSE_BUF_IS_FD))
    return NULL;
  const char *base = current->mem;
  const char *p = data;
  if (p < base || len > current->size || p - base > (ptrdiff_t) (current->size - len))
    return NULL;
  taken = TRUE;
  return current->mem;
}

typedef struct {
  struct fuse_session *se;
  sem_t *finished;
} LoopArgs;

static void
free_buffer (void *p)
{
  struct fuse_buf *buf = p;
  free (buf->mem);
  buf->mem = NULL;
}

static void *
loop_thread (void *opaque)
{
  LoopArgs *a = opaque;
  struct fuse_buf buf = { .mem = NULL };
  int state;

  pthread_cleanup_push (free_buffer, &buf);
  while (!fuse_session_exited (a->se)) {
    int r = fuse_session_receive_buf (a->se, &buf);
    if (r == -EINTR)
      continue;
    if (r <= 0) {
      if (r < 0)
        fuse_session_exit (a->se);
      break;
    }
    pthread_setcancelstate (PTHREAD_CANCEL_DISABLE, &state);
    current = &buf;
    taken = FALSE;
    fuse_session_process_buf (a->se, &buf);
    current = NULL;
    if (taken)
      buf.mem = NULL;         /* the write owns it now */
    pthread_setcancelstate (PTHREAD_CANCEL_ENABLE, &state);
  }
  pthread_cleanup_pop (1);
  sem_post (a->finished);
  return NULL;
}

int
nbdfs_loop_run (struct fuse_session *se)
{
  pthread_t threads[NBDFS_LOOP_THREADS];
  unsigned n = 0;
  sem_t finished;
  LoopArgs args = { .se = se, .finished = &finished };

  sem_init (&finished, 0, 0);
  for (; n < NBDFS_LOOP_THREADS; n++) {
    int err = pthread_create (&threads[n], NULL, loop_thread, &args);
    if (err) {
      g_warning ("cannot start a FUSE thread: %s", g_strerror (err));
      if (n == 0) {
        sem_destroy (&finished);
        return -err;
      }
      break;
    }
  }
  while (!fuse_session_exited (se))
    sem_wait (&finished);     /* EINTR on a signal: check again */
  for (unsigned i = 0; i < n; i++)
    pthread_cancel (threads[i]);
  for (unsigned i = 0; i < n; i++)
    pthread_join (threads[i], NULL);
  sem_destroy (&finished);
  return 0;
}
