/* nbdfs — the sd_notify(3) protocol, written out instead of linking
 * libsystemd: it is one sendmsg() of text to the AF_UNIX datagram socket
 * named by $NOTIFY_SOCKET ('@' = abstract namespace), plus a pipe passed
 * with SCM_RIGHTS for the barrier. Linking libsystemd for that would add
 * a dependency (and its own dependencies: lz4, zstd, gcrypt, capabilities)
 * to a program that must also run where systemd is absent (containers,
 * initramfs); systemd documents this protocol as stable for exactly this
 * use (sd_notify(3), "Notes"). vsock NOTIFY_SOCKET addresses (VMs run by
 * systemd-vmspawn) are not supported: we say so and carry on. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gio/gio.h>

#include "system/notify.h"

gboolean
nbdfs_notify_wanted (void)
{
  const char *s = g_getenv ("NOTIFY_SOCKET");
  return s != NULL && *s != '\0';
}

static gboolean
io_error (GError **error, int e, const char *what)
{
  g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e),
               "NOTIFY_SOCKET %s: %s", what, g_strerror (e));
  return FALSE;
}

/* Sends state, with fd (or -1) attached. */
static gboolean
send_state (const char *state, int fd, GError **error)
{
  const char *path = g_getenv ("NOTIFY_SOCKET");
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  size_t len;

  if (path == NULL || *path == '\0')
    return TRUE;
  len = strlen (path);
  if ((path[0] != '/' && path[0] != '@') || len >= sizeof sa.sun_path) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                 "NOTIFY_SOCKET=%s: only absolute paths and abstract (@) "
                 "sockets are supported", path);
    return FALSE;
  }
  memcpy (sa.sun_path, path, len);
  if (path[0] == '@')
    sa.sun_path[0] = '\0';
  socklen_t salen = offsetof (struct sockaddr_un, sun_path) + len
    + (path[0] == '@' ? 0 : 1);

  int s = socket (AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0)
    return io_error (error, errno, "socket");

  struct iovec iov = { .iov_base = (void *) state, .iov_len = strlen (state) };
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE (sizeof (int))];
  } control;
  struct msghdr msg = { .msg_name = &sa, .msg_namelen = salen,
                        .msg_iov = &iov, .msg_iovlen = 1 };
  if (fd >= 0) {
    memset (&control, 0, sizeof control);
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR (&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN (sizeof (int));
    memcpy (CMSG_DATA (c), &fd, sizeof fd);
  }
  ssize_t r;
  do
    r = sendmsg (s, &msg, MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  int e = errno;
  close (s);
  if (r < 0)
    return io_error (error, e, path);
  return TRUE;
}

gboolean
nbdfs_notify (const char *state, GError **error)
{
  return send_state (state, -1, error);
}

gboolean
nbdfs_notifyf (GError **error, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *state = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  return send_state (state, -1, error);
}

gboolean
nbdfs_notify_barrier (unsigned timeout_ms, GError **error)
{
  int p[2];

  if (!nbdfs_notify_wanted ())
    return TRUE;
  if (pipe2 (p, O_CLOEXEC) != 0)
    return io_error (error, errno, "barrier pipe");
  gboolean ok = send_state ("BARRIER=1", p[1], error);
  /* systemd holds the other copy of the write end; when it closes it,
   * everything we sent before has been processed. */
  close (p[1]);
  if (ok) {
    struct pollfd pfd = { .fd = p[0], .events = 0 };
    int r;
    do
      r = poll (&pfd, 1, (int) timeout_ms);
    while (r < 0 && errno == EINTR);
    if (r == 0) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT,
                   "NOTIFY_SOCKET: no answer to BARRIER=1 within %u ms",
                   timeout_ms);
      ok = FALSE;
    }
    else if (r < 0)
      ok = io_error (error, errno, "barrier poll");
  }
  close (p[0]);
  return ok;
}
