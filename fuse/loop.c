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
 *
 * Splicing (pipes.c): while large writes arrive (one in the last
 * NBDFS_SPLICE_US), a thread splices each request into a pipe of its own
 * instead of reading it. A large write then takes the pipe, and its
 * payload goes to the server by reference. Everything else costs one
 * more system call (the header is read back out of the pipe), which is
 * why small-request workloads (random 4 KiB I/O) keep plain reads.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "fuse/fs.h"

#define NBDFS_LOOP_THREADS 4
/* How long splicing stays on after the last large write. */
#define NBDFS_SPLICE_US (1 * G_USEC_PER_SEC)

static __thread struct fuse_buf *current;
static __thread gboolean taken;

static __thread NbdfsPipe *rpipe;       /* this thread's receive pipe */
static __thread gboolean rpipe_taken;
/* struct fuse_in_header and struct fuse_write_in (<linux/fuse.h>, which
 * clashes with libfuse's headers), 40 bytes each since protocol 7.9. */
#define FUSE_IN_HEADER_SIZE 40
#define FUSE_WRITE_IN_SIZE 40
/* A request shorter than this came through the pipe but is handled from
 * memory (libfuse does the same): header, write header, one page. */
#define SMALL_REQUEST (FUSE_IN_HEADER_SIZE + FUSE_WRITE_IN_SIZE + 4096)
static __thread char small_buf[SMALL_REQUEST + 4096];

static gboolean splice_enabled;         /* set before the threads start */
static _Atomic gint64 splice_until;     /* monotonic us */

void
nbdfs_loop_enable_splice (gboolean on)
{
  splice_enabled = on;
}

gboolean
nbdfs_loop_splice_enabled (void)
{
  return splice_enabled;
}

void
nbdfs_loop_want_splice (void)
{
  if (splice_enabled)
    atomic_store_explicit (&splice_until,
                           g_get_monotonic_time () + NBDFS_SPLICE_US,
                           memory_order_relaxed);
}

NbdfsPipe *
nbdfs_loop_take_pipe (int fd)
{
  if (rpipe == NULL || rpipe_taken || rpipe->fd[0] != fd)
    return NULL;
  rpipe_taken = TRUE;
  return rpipe;
}

static gboolean
want_splice (void)
{
  return splice_enabled
    && g_get_monotonic_time ()
       < atomic_load_explicit (&splice_until, memory_order_relaxed);
}

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
  nbdfs_pipe_put (rpipe);
  rpipe = NULL;
}

/* Receives one request through this thread's pipe and dispatches it.
 * Returns as fuse_session_receive_buf does: > 0 done, 0 session over,
 * -errno. */
static int
splice_one (struct fuse_session *se)
{
  ssize_t n = splice (fuse_session_fd (se), NULL, rpipe->fd[1], NULL,
                      NBDFS_MAX_WRITE + 4096, 0);
  if (n < 0) {
    int e = errno;
    if (e == ENODEV) {
      /* Unmounted, or aborted through /sys/fs/fuse/connections. */
      fuse_session_exit (se);
      return 0;
    }
    /* ENOENT: the request was interrupted before we got it. */
    return e == EAGAIN || e == ENOENT ? -EINTR : -e;
  }
  if (fuse_session_exited (se))
    return 0;
  if ((size_t) n < FUSE_IN_HEADER_SIZE) {
    g_warning ("short splice from /dev/fuse (%zd bytes)", n);
    return -EIO;
  }
  int state;
  pthread_setcancelstate (PTHREAD_CANCEL_DISABLE, &state);
  if ((size_t) n < SMALL_REQUEST) {
    size_t got = 0;
    while (got < (size_t) n) {
      ssize_t r = read (rpipe->fd[0], small_buf + got, n - got);
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0) {
        pthread_setcancelstate (PTHREAD_CANCEL_ENABLE, &state);
        return -EIO;
      }
      got += r;
    }
    struct fuse_buf fb = { .mem = small_buf, .size = n };
    fuse_session_process_buf (se, &fb);
  }
  else {
    struct fuse_buf fb = { .size = n, .flags = FUSE_BUF_IS_FD,
                           .fd = rpipe->fd[0] };
    rpipe_taken = FALSE;
    fuse_session_process_buf (se, &fb);
    if (rpipe_taken)
      rpipe = NULL;           /* the write owns it now */
    else if (!nbdfs_pipe_empty (rpipe)) {
      nbdfs_pipe_put (rpipe);
      rpipe = NULL;
    }
  }
  pthread_setcancelstate (PTHREAD_CANCEL_ENABLE, &state);
  return 1;
}

/* Receives one request with read(2) and dispatches it; returns as
 * splice_one. */
static int
read_one (struct fuse_session *se, struct fuse_buf *buf)
{
  int state;
  int r = fuse_session_receive_buf (se, buf);
  if (r <= 0)
    return r;
  pthread_setcancelstate (PTHREAD_CANCEL_DISABLE, &state);
  current = buf;
  taken = FALSE;
  fuse_session_process_buf (se, buf);
  current = NULL;
  if (taken)
    buf->mem = NULL;          /* the write owns it now */
  pthread_setcancelstate (PTHREAD_CANCEL_ENABLE, &state);
  return r;
}

static void *
loop_thread (void *opaque)
{
  LoopArgs *a = opaque;
  struct fuse_buf buf = { .mem = NULL };

  pthread_cleanup_push (free_buffer, &buf);
  while (!fuse_session_exited (a->se)) {
    gboolean spliced = want_splice ()
      && (rpipe != NULL || (rpipe = nbdfs_pipe_get ()) != NULL);
    int r = spliced ? splice_one (a->se) : read_one (a->se, &buf);
    if (r == -EINTR)
      continue;
    if (r <= 0) {
      if (r < 0)
        fuse_session_exit (a->se);
      break;
    }
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
  /* Only this thread takes the stop signals: libfuse's handler just sets
   * "exited", and only a thread woken by the signal notices. A loop
   * thread would notice too, but the threads the pool starts from a
   * request (the reconnect prober, reconnect threads, new connections'
   * readers) inherit their creator's mask: if such a thread took SIGTERM
   * and then ended, nobody woke up and nbdfs never exited. */
  sigset_t stop, old;
  sigemptyset (&stop);
  sigaddset (&stop, SIGTERM);
  sigaddset (&stop, SIGINT);
  sigaddset (&stop, SIGHUP);
  pthread_sigmask (SIG_BLOCK, &stop, &old);
  for (; n < NBDFS_LOOP_THREADS; n++) {
    int err = pthread_create (&threads[n], NULL, loop_thread, &args);
    if (err) {
      g_warning ("cannot start a FUSE thread: %s", g_strerror (err));
      if (n == 0) {
        pthread_sigmask (SIG_SETMASK, &old, NULL);
        sem_destroy (&finished);
        return -err;
      }
      break;
    }
  }
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  while (!fuse_session_exited (se))
    sem_wait (&finished);     /* EINTR on a signal: check again */
  for (unsigned i = 0; i < n; i++)
    pthread_cancel (threads[i]);
  for (unsigned i = 0; i < n; i++)
    pthread_join (threads[i], NULL);
  sem_destroy (&finished);
  return 0;
}
