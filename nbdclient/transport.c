/* nbdfs — the plain socket transport and the blocking read/write helpers
 * the handshake uses (transport.h). TLS (tls.c) supplies its own ops. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <gio/gio.h>

#include "nbdclient/error.h"
#include "nbdclient/transport.h"

static ssize_t
plain_recv (NbdTransport *t, void *buf, size_t len)
{
  ssize_t r;
  do
    r = recv (t->fd, buf, len, 0);
  while (r < 0 && errno == EINTR);
  return r;
}

static ssize_t
plain_recv_nowait (NbdTransport *t, void *buf, size_t len)
{
  ssize_t r;
  do
    r = recv (t->fd, buf, len, MSG_DONTWAIT);
  while (r < 0 && errno == EINTR);
  return r;
}

static ssize_t
plain_send (NbdTransport *t, const void *buf, size_t len)
{
  ssize_t r;
  do
    r = send (t->fd, buf, len, MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  return r;
}

static ssize_t
plain_sendv (NbdTransport *t, const struct iovec *iov, int iovcnt)
{
  struct msghdr msg = { .msg_iov = (struct iovec *) iov,
                        .msg_iovlen = iovcnt };
  ssize_t r;
  do
    r = sendmsg (t->fd, &msg, MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  return r;
}

static gboolean
plain_pending (NbdTransport *t)
{
  return FALSE;
}

static void
plain_shutdown (NbdTransport *t)
{
  if (t->fd >= 0)
    shutdown (t->fd, SHUT_RDWR);
}

static const NbdTransportOps plain_ops = {
  .recv = plain_recv,
  .recv_nowait = plain_recv_nowait,
  .send = plain_send,
  .sendv = plain_sendv,
  .pending = plain_pending,
  .shutdown = plain_shutdown,
  .free_priv = NULL,
  .name = "plain",
};

NbdTransport *
nbdc_transport_plain_new (int fd)
{
  NbdTransport *t = g_new0 (NbdTransport, 1);
  t->ops = &plain_ops;
  t->fd = fd;
  return t;
}

gboolean
nbdc_transport_is_tls (const NbdTransport *t)
{
  return t != NULL && t->ops != &plain_ops;
}

void
nbdc_transport_free (NbdTransport *t)
{
  if (t == NULL)
    return;
  if (t->ops && t->ops->free_priv)
    t->ops->free_priv (t);
  if (t->fd >= 0)
    close (t->fd);
  g_free (t);
}

int
nbdc_transport_steal_fd (NbdTransport *t)
{
  g_return_val_if_fail (t != NULL && t->ops == &plain_ops, -1);
  int fd = t->fd;
  t->fd = -1;
  nbdc_transport_free (t);
  return fd;
}

void
nbdc_transport_shutdown (NbdTransport *t)
{
  if (t && t->ops && t->ops->shutdown)
    t->ops->shutdown (t);
}

/* Waits until fd is ready for events or the deadline passes. Returns 0,
 * ETIMEDOUT, or an errno. TLS transports with buffered bytes never wait.
 * Without a deadline we let the (blocking) I/O call wait, unless it just
 * said EAGAIN (again = TRUE): then poll without a limit, never spin. */
static int
wait_ready (NbdTransport *t, short events, gint64 deadline, gboolean again)
{
  if (deadline == 0 && !again)
    return 0;
  /* The deadline first: a TLS peer can keep records without data pending
   * forever. */
  if (deadline && g_get_monotonic_time () >= deadline)
    return ETIMEDOUT;
  if ((events & POLLIN) && t->ops->pending && t->ops->pending (t))
    return 0;
  for (;;) {
    int ms = -1;
    if (deadline) {
      gint64 left = deadline - g_get_monotonic_time ();
      if (left <= 0)
        return ETIMEDOUT;
      /* Round up so we never spin on a sub-millisecond remainder. */
      ms = (int) MIN ((left + 999) / 1000, G_MAXINT);
    }
    struct pollfd pfd = { .fd = t->fd, .events = events };
    int r = poll (&pfd, 1, ms);
    if (r > 0)
      return 0;   /* readable, writable, or HUP/ERR: the I/O call says */
    if (r < 0 && errno != EINTR)
      return errno;
  }
}

static void
set_io_error (GError **error, int err, const char *verb, const char *what)
{
  if (err == ETIMEDOUT)
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_TIMEOUT,
                 "timed out %s %s", verb, what);
  else
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err),
                 "%s %s: %s", verb, what, g_strerror (err));
}

gboolean
nbdc_read_full (NbdTransport *t, void *buf, size_t len, gint64 deadline,
                const char *what, GError **error)
{
  char *p = buf;
  gboolean again = FALSE;
  while (len > 0) {
    int err = wait_ready (t, POLLIN, deadline, again);
    if (err) {
      set_io_error (error, err, "while", what);
      return FALSE;
    }
    ssize_t r = t->ops->recv (t, p, len);
    again = r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    if (r == 0) {
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                   "server closed the connection while %s", what);
      return FALSE;
    }
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        continue;
      set_io_error (error, errno, "error while", what);
      return FALSE;
    }
    p += r;
    len -= r;
  }
  return TRUE;
}

gboolean
nbdc_write_full (NbdTransport *t, const void *buf, size_t len,
                 gint64 deadline, const char *what, GError **error)
{
  const char *p = buf;
  gboolean again = FALSE;
  while (len > 0) {
    int err = wait_ready (t, POLLOUT, deadline, again);
    if (err) {
      set_io_error (error, err, "while", what);
      return FALSE;
    }
    ssize_t r = t->ops->send (t, p, len);
    again = r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        continue;
      set_io_error (error, errno, "error while", what);
      return FALSE;
    }
    p += r;
    len -= r;
  }
  return TRUE;
}

