/* nbdfs — open the socket (connect.h): every getaddrinfo address in turn
 * for TCP, or a Unix socket (path or Linux abstract name). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <gio/gio.h>

#include "nbdclient/connect.h"
#include "nbdclient/error.h"

/* Connects fd to sa, waiting at most until deadline (0 = no limit).
 * Returns 0 or an errno (ETIMEDOUT past the deadline). */
static int
connect_bounded (int fd, const struct sockaddr *sa, socklen_t salen,
                 gint64 deadline)
{
  int flags = fcntl (fd, F_GETFL);
  if (flags < 0 || fcntl (fd, F_SETFL, flags | O_NONBLOCK) < 0)
    return errno;
  int err = 0;
  int cr;
  /* A nonblocking AF_UNIX connect says EAGAIN when the listener's backlog
   * is full (it never says EINPROGRESS): try again until the deadline. */
  while ((cr = connect (fd, sa, salen)) < 0 && errno == EAGAIN
         && sa->sa_family == AF_UNIX) {
    if (deadline && g_get_monotonic_time () >= deadline) {
      errno = ETIMEDOUT;
      break;
    }
    g_usleep (10000);
  }
  if (cr < 0) {
    if (errno != EINPROGRESS && errno != EINTR)
      err = errno;
    else {
      for (;;) {
        int ms = -1;
        if (deadline) {
          gint64 left = deadline - g_get_monotonic_time ();
          if (left <= 0) {
            err = ETIMEDOUT;
            break;
          }
          ms = (int) MIN ((left + 999) / 1000, G_MAXINT);
        }
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        int r = poll (&pfd, 1, ms);
        if (r < 0 && errno == EINTR)
          continue;
        if (r < 0) {
          err = errno;
          break;
        }
        if (r == 0)
          continue;    /* re-check the deadline */
        socklen_t len = sizeof err;
        if (getsockopt (fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
          err = errno;
        break;
      }
    }
  }
  /* Back to blocking: everything above us assumes blocking sockets. */
  if (err == 0 && fcntl (fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
    err = errno;
  return err;
}

static void
set_connect_error (GError **error, int err, const char *where)
{
  if (err == ETIMEDOUT)
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_TIMEOUT,
                 "connecting to %s: timed out", where);
  else
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err),
                 "connecting to %s: %s", where, g_strerror (err));
}

static int
connect_unix (const NbdAddress *addr, gint64 deadline, GError **error)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  size_t len = addr->socket_len ? addr->socket_len : strlen (addr->socket_path);
  gboolean abstract = len > 0 && addr->socket_path[0] == '\0';
  g_autofree char *shown = abstract
    ? g_strdup_printf ("unix:@%.*s", (int) len - 1, addr->socket_path + 1)
    : g_strdup_printf ("unix:%s", addr->socket_path);

  if (len == 0 || len >= sizeof sun.sun_path) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "%s: a Unix socket path must be 1 to %zu bytes long",
                 shown, sizeof sun.sun_path - 1);
    return -1;
  }
  memcpy (sun.sun_path, addr->socket_path, len);
  socklen_t salen = offsetof (struct sockaddr_un, sun_path)
    + len + (abstract ? 0 : 1);

  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    set_connect_error (error, errno, shown);
    return -1;
  }
  int err = connect_bounded (fd, (struct sockaddr *) &sun, salen, deadline);
  if (err) {
    close (fd);
    set_connect_error (error, err, shown);
    return -1;
  }
  g_debug ("connected to %s", shown);
  return fd;
}

static char *
describe_sockaddr (const struct sockaddr *sa, socklen_t len)
{
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (getnameinfo (sa, len, host, sizeof host, serv, sizeof serv,
                   NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return g_strdup ("?");
  if (sa->sa_family == AF_INET6)
    return g_strdup_printf ("[%s]:%s", host, serv);
  return g_strdup_printf ("%s:%s", host, serv);
}

static int
connect_tcp (const NbdAddress *addr, gint64 deadline, GError **error)
{
  const char *port = nbdc_address_port (addr);
  struct addrinfo hints = { .ai_family = AF_UNSPEC,
                            .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_ADDRCONFIG };
  struct addrinfo *res = NULL;
  g_autofree char *where = strchr (addr->host, ':')
    ? g_strdup_printf ("[%s]:%s", addr->host, port)
    : g_strdup_printf ("%s:%s", addr->host, port);

  int gai = getaddrinfo (addr->host, port, &hints, &res);
  if (gai == EAI_ADDRFAMILY || gai == EAI_NONAME) {
    /* AI_ADDRCONFIG hides ::1 on hosts with only loopback v6; retry. */
    hints.ai_flags = 0;
    gai = getaddrinfo (addr->host, port, &hints, &res);
  }
  if (gai != 0) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_FAILED,
                 "cannot resolve %s: %s", where,
                 gai == EAI_SYSTEM ? g_strerror (errno) : gai_strerror (gai));
    return -1;
  }

  int fd = -1, last_err = 0;
  g_autofree char *last_where = NULL;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    g_free (last_where);
    last_where = describe_sockaddr (ai->ai_addr, ai->ai_addrlen);
    fd = socket (ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                 ai->ai_protocol);
    if (fd < 0) {
      last_err = errno;
      continue;
    }
    last_err = connect_bounded (fd, ai->ai_addr, ai->ai_addrlen, deadline);
    if (last_err == 0)
      break;
    g_debug ("connecting to %s: %s", last_where, g_strerror (last_err));
    close (fd);
    fd = -1;
    if (last_err == ETIMEDOUT)
      break;          /* the whole budget is spent */
  }
  freeaddrinfo (res);
  if (fd < 0) {
    g_autofree char *both = g_strcmp0 (last_where, where) == 0
      || last_where == NULL ? g_strdup (where)
      : g_strdup_printf ("%s (%s)", where, last_where);
    set_connect_error (error, last_err ? last_err : ECONNREFUSED, both);
    return -1;
  }

  /* Small option messages and request headers must not wait for Nagle;
   * keepalive notices a peer that vanished without a FIN. */
  int one = 1;
  setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt (fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  g_debug ("connected to %s", last_where);
  return fd;
}

int
nbdc_connect (const NbdAddress *addr, gint64 deadline, GError **error)
{
  if (addr->socket_path)
    return connect_unix (addr, deadline, error);
  if (addr->host)
    return connect_tcp (addr, deadline, error);
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
               "no host or socket to connect to");
  return -1;
}
