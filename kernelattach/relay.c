/* nbdfs — kernel mode over TLS: the relay between nbd.ko and TLS sessions.
 *
 * The kernel's nbd driver has no TLS, so (like nbd-client) we give it one
 * end of a socketpair per connection and move the bytes between the other
 * end and the TLS session ourselves. One thread serves every connection of
 * the device with poll(): kernel -> server is read from the socketpair and
 * sent through TLS; server -> kernel is decrypted and written to the
 * socketpair, each direction with a bounded buffer, so a slow side only
 * stops its own direction. Nothing waits but poll(): the TLS sessions are
 * in event-loop mode (nbdc_tls_set_single_thread), so a send takes what
 * the session's bounded buffer has room for and the rest waits in up for
 * POLLOUT; what the server sends is read only while the kernel has taken
 * what came before. A server that stops reading, or floods us, stalls
 * only its own connection and costs at most BUF_SIZE twice plus
 * NBDC_TLS_BUFFER_MAX; the kernel's request timeout then judges it. Each
 * pump moves at most BUF_SIZE per turn, so one busy connection cannot
 * starve the others either.
 *
 * A connection ends when either side does: the kernel closing its end (the
 * device was disconnected) closes the TLS session (close_notify), and a
 * dead TLS session (server gone, protocol error) shuts the kernel's end,
 * which the driver sees as a dead link (with --persist, persist.c then
 * brings a new connection through nbdk_open_socket -> nbdk_relay_add).
 *
 * Connections are added before the relay thread starts (first attach: the
 * thread must start in the process that stays, after any fork) or while it
 * runs (persist.c reconnecting), through a locked list and an eventfd.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib-unix.h>

#include "kernelattach/kernel.h"
#include "nbdclient/error.h"
#include "nbdclient/tls.h"

#define BUF_SIZE (1024 * 1024)
#define MAX_RELAYED 64

/* One relayed connection. Once the relay thread took it from relay.added
 * it is that thread's alone: no lock. */
typedef struct {
  NbdTransport *t;       /* the TLS session (owned) */
  int kfd;               /* our end of the socketpair (non-blocking) */
  char *up;              /* kernel -> server, not yet sent */
  size_t up_off, up_len;
  char *down;            /* server -> kernel, decrypted, not yet written */
  size_t down_off, down_len;
  gboolean dead;
} Relayed;

/* Shared between the adding threads (nbdk_start, persist.c) and the relay
 * thread. */
static struct {
  GMutex lock;
  GPtrArray *added;      /* Relayed*, waiting for the thread (lock) */
  unsigned live;         /* connections being relayed (lock) */
  GCond idle;            /* live dropped to 0 (with lock) */
  /* eventfd: something added, or stop. Created by the first add, before
   * the thread exists, then only read and written (no lock needed). */
  int wake_fd;
  gboolean stop;         /* lock */
  /* The thread that calls nbdk_relay_start/stop only. */
  GThread *thread;
  /* The relay thread only (read after it was joined). */
  guint64 bytes_up, bytes_down;
} relay = { .wake_fd = -1 };

static void
relayed_free (Relayed *c)
{
  if (c->kfd >= 0)
    close (c->kfd);
  if (c->t) {
    nbdc_transport_shutdown (c->t);   /* close_notify, best effort */
    nbdc_transport_free (c->t);
  }
  g_free (c->up);
  g_free (c->down);
  g_free (c);
}

int
nbdk_relay_add (NbdTransport *t, GError **error)
{
  int sv[2];

  if (relay.wake_fd < 0) {
    relay.wake_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (relay.wake_fd < 0) {
      int err = errno;
      nbdc_transport_free (t);
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err),
                   "TLS relay: eventfd: %s", g_strerror (err));
      return -1;
    }
    relay.added = g_ptr_array_new ();
  }
  /* The kernel's end stays blocking (prepare_for_kernel's rules). */
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    int err = errno;
    nbdc_transport_free (t);
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err),
                 "TLS relay: socketpair: %s", g_strerror (err));
    return -1;
  }
  if (!g_unix_set_fd_nonblocking (sv[1], TRUE, NULL)) {
    close (sv[0]);
    close (sv[1]);
    nbdc_transport_free (t);
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_FAILED,
                 "TLS relay: cannot make the socketpair non-blocking");
    return -1;
  }
  nbdc_tls_set_single_thread (t);
  Relayed *c = g_new0 (Relayed, 1);
  c->t = t;
  c->kfd = sv[1];
  c->up = g_malloc (BUF_SIZE);
  c->down = g_malloc (BUF_SIZE);

  g_mutex_lock (&relay.lock);
  g_ptr_array_add (relay.added, c);
  relay.live++;
  g_mutex_unlock (&relay.lock);
  guint64 one = 1;
  (void) !write (relay.wake_fd, &one, sizeof one);
  g_debug ("TLS relay: connection added (kernel end fd %d)", sv[0]);
  return sv[0];
}

gboolean
nbdk_relay_active (void)
{
  g_mutex_lock (&relay.lock);
  gboolean r = relay.live > 0;
  g_mutex_unlock (&relay.lock);
  return r;
}

/* Kernel -> server: send what is left in up, then read what the kernel
 * wrote and send it through TLS. TRUE with bytes left in up when the TLS
 * session has no room (wait for POLLOUT on its fd). FALSE when the
 * connection is over. */
static gboolean
pump_up (Relayed *c)
{
  size_t moved = 0;
  for (;;) {
    while (c->up_off < c->up_len) {
      struct iovec iov = { c->up + c->up_off, c->up_len - c->up_off };
      ssize_t w = c->t->ops->sendv (c->t, &iov, 1);
      if (w < 0) {
        if (errno == EINTR)
          continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          return TRUE;
        g_message ("TLS relay: sending to the server failed (%s); "
                   "dropping the connection", g_strerror (errno));
        return FALSE;
      }
      c->up_off += w;
      relay.bytes_up += w;
    }
    c->up_off = c->up_len = 0;
    if (moved >= BUF_SIZE)
      return TRUE;             /* the others' turn; poll comes back */
    ssize_t r = recv (c->kfd, c->up, BUF_SIZE, MSG_DONTWAIT);
    if (r == 0) {
      g_debug ("TLS relay: the kernel closed its end");
      return FALSE;
    }
    if (r < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return TRUE;
      g_debug ("TLS relay: reading from the kernel: %s", g_strerror (errno));
      return FALSE;
    }
    c->up_len = r;
    moved += r;
  }
}

/* Server -> kernel: decrypt what is there, write it to the kernel. FALSE
 * when the connection is over. */
static gboolean
pump_down (Relayed *c)
{
  size_t moved = 0;
  for (;;) {
    /* Flush first: never read more than the kernel has taken. */
    while (c->down_off < c->down_len) {
      ssize_t w = send (c->kfd, c->down + c->down_off,
                        c->down_len - c->down_off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0) {
        if (errno == EINTR)
          continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          return TRUE;         /* wait for POLLOUT on kfd */
        g_debug ("TLS relay: writing to the kernel: %s", g_strerror (errno));
        return FALSE;
      }
      c->down_off += w;
      relay.bytes_down += w;
    }
    c->down_off = c->down_len = 0;
    if (moved >= BUF_SIZE)
      return TRUE;             /* the others' turn */
    ssize_t r = c->t->ops->recv (c->t, c->down, BUF_SIZE);
    if (r == 0) {
      g_message ("TLS relay: the server closed the connection");
      return FALSE;
    }
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return TRUE;
      if (errno == EINTR)
        continue;
      g_message ("TLS relay: receiving from the server failed (%s); "
                 "dropping the connection", g_strerror (errno));
      return FALSE;
    }
    c->down_len = r;
    moved += r;
  }
}

static gpointer
relay_thread (gpointer data)
{
  GPtrArray *conns = g_ptr_array_new ();
  struct pollfd pfd[1 + 2 * MAX_RELAYED];

  for (;;) {
    g_mutex_lock (&relay.lock);
    gboolean stop = relay.stop;
    while (relay.added->len > 0 && conns->len < MAX_RELAYED)
      g_ptr_array_add (conns, g_ptr_array_steal_index (relay.added, 0));
    g_mutex_unlock (&relay.lock);
    if (stop)
      break;

    /* Work that needs no waiting: records already buffered in TLS. */
    gboolean busy = FALSE;
    for (guint i = 0; i < conns->len; i++) {
      Relayed *c = conns->pdata[i];
      if (!c->dead && c->down_off == c->down_len
          && c->t->ops->pending (c->t)) {
        if (!pump_down (c))
          c->dead = TRUE;
        busy = TRUE;
      }
    }

    /* Drop finished connections: shutting the kernel's end tells the
     * driver the link is dead. */
    for (guint i = 0; i < conns->len;) {
      Relayed *c = conns->pdata[i];
      if (!c->dead) {
        i++;
        continue;
      }
      shutdown (c->kfd, SHUT_RDWR);
      g_ptr_array_remove_index_fast (conns, i);
      relayed_free (c);
      g_mutex_lock (&relay.lock);
      if (--relay.live == 0)
        g_cond_broadcast (&relay.idle);
      g_mutex_unlock (&relay.lock);
    }

    pfd[0] = (struct pollfd) { .fd = relay.wake_fd, .events = POLLIN };
    for (guint i = 0; i < conns->len; i++) {
      Relayed *c = conns->pdata[i];
      gboolean flushing = c->down_off < c->down_len;
      gboolean sending = c->up_off < c->up_len;
      /* Read from the kernel only once its last bytes went out. */
      pfd[1 + 2 * i] = (struct pollfd) {
        .fd = c->kfd,
        .events = (sending ? 0 : POLLIN) | (flushing ? POLLOUT : 0) };
      /* While the kernel has not taken the last reply, leave the rest in
       * the socket: TCP flow control slows the server down. */
      short sev = nbdc_tls_poll_events (c->t);
      if (flushing)
        sev &= ~POLLIN;
      if (sending)
        sev |= POLLOUT;
      pfd[2 + 2 * i] = (struct pollfd) { .fd = sev ? c->t->fd : -1,
                                         .events = sev };
    }
    int n = poll (pfd, 1 + 2 * conns->len, busy ? 0 : -1);
    if (n < 0 && errno != EINTR) {
      g_warning ("TLS relay: poll: %s", g_strerror (errno));
      break;
    }
    if (n <= 0)
      continue;
    if (pfd[0].revents) {
      guint64 v;
      (void) !read (relay.wake_fd, &v, sizeof v);
    }
    for (guint i = 0; i < conns->len; i++) {
      Relayed *c = conns->pdata[i];
      short kev = pfd[1 + 2 * i].revents, sev = pfd[2 + 2 * i].revents;
      if (sev & (POLLOUT | POLLERR | POLLHUP)) {
        int err = nbdc_tls_flush (c->t);
        if (err) {
          g_message ("TLS relay: sending to the server failed (%s); "
                     "dropping the connection", g_strerror (err));
          c->dead = TRUE;
          continue;
        }
      }
      if (c->up_off < c->up_len) {
        /* The kernel hung up while its bytes wait for the server: the
         * connection is over either way. */
        if (kev & (POLLHUP | POLLERR))
          c->dead = TRUE;
        else if ((sev & POLLOUT) && !pump_up (c))
          c->dead = TRUE;
      }
      else if ((kev & (POLLIN | POLLHUP | POLLERR)) && !pump_up (c))
        c->dead = TRUE;
      if (!c->dead && ((sev & (POLLIN | POLLHUP | POLLERR))
                       || (kev & POLLOUT)) && !pump_down (c))
        c->dead = TRUE;
    }
  }

  for (guint i = 0; i < conns->len; i++)
    relayed_free (conns->pdata[i]);
  g_ptr_array_free (conns, TRUE);
  g_debug ("TLS relay: stopped (%" G_GUINT64_FORMAT " bytes to the server, %"
           G_GUINT64_FORMAT " to the kernel)", relay.bytes_up,
           relay.bytes_down);
  return NULL;
}

void
nbdk_relay_start (void)
{
  if (relay.wake_fd < 0 || relay.thread)
    return;
  relay.stop = FALSE;
  relay.thread = g_thread_new ("tls-relay", relay_thread, NULL);
}

void
nbdk_relay_wait_idle (void)
{
  g_mutex_lock (&relay.lock);
  while (relay.live > 0)
    g_cond_wait (&relay.idle, &relay.lock);
  g_mutex_unlock (&relay.lock);
}

void
nbdk_relay_stop (void)
{
  if (relay.thread == NULL)
    return;
  g_mutex_lock (&relay.lock);
  relay.stop = TRUE;
  g_mutex_unlock (&relay.lock);
  guint64 one = 1;
  (void) !write (relay.wake_fd, &one, sizeof one);
  g_thread_join (relay.thread);
  relay.thread = NULL;
}
