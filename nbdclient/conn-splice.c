/* nbdfs — sending a WRITE whose payload is held in a pipe
 * (NbdcCmd.in_pipe) without copying it through our memory.
 *
 * The submitter's pipe (for nbdfs: the one the FUSE request was spliced
 * into, whose buffers reference the writer's page-cache pages) is never
 * consumed: each send writes the request header into this connection's
 * scratch pipe, appends a duplicate of the payload's buffers with tee(2)
 * (references, no copy), and moves header and payload to the socket with
 * one splice(2) stream (the kernel hands the pages to the socket by
 * reference too). The original stays intact until the request completes,
 * so a request salvaged after a lost connection is sent again the same
 * way.
 *
 * tee always duplicates from the start of its source, so the whole
 * payload must fit the scratch pipe at once: the pipe is sized at
 * creation and nbdc_conn_pipe_max says how large a payload it takes (the
 * pool sends nothing larger). Unprivileged processes may not grow a pipe
 * past /proc/sys/fs/pipe-max-size (1 MiB by default): then there is no
 * scratch pipe and the pool never hands us pipe payloads.
 *
 * All of this runs with send_lock held (the scratch pipe is the send
 * path's).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>

#include "nbdclient/conn-internal.h"

/* 1 MiB: the most an unprivileged process may give a pipe by default
 * (/proc/sys/fs/pipe-max-size). Its 256 slots take the header's buffer
 * and a payload touching at most 255 pages: 254 pages of payload, however
 * it falls. */
#define SCRATCH_BYTES   (1u << 20)
#define SCRATCH_SPARE   (2 * 4096u)

void
conn_scratch_open (NbdConn *c)
{
  c->scratch[0] = c->scratch[1] = -1;
  c->scratch_max = 0;
  int p[2];
  if (pipe2 (p, O_CLOEXEC) != 0)
    return;
  int got = fcntl (p[1], F_SETPIPE_SZ, SCRATCH_BYTES);
  if (got < (int) SCRATCH_BYTES) {
    /* Over the unprivileged limit: no pipe payloads on this connection. */
    close (p[0]);
    close (p[1]);
    return;
  }
  c->scratch[0] = p[0];
  c->scratch[1] = p[1];
  c->scratch_max = (size_t) got - SCRATCH_SPARE;
}

void
conn_scratch_close (NbdConn *c)
{
  for (int i = 0; i < 2; i++)
    if (c->scratch[i] >= 0) {
      close (c->scratch[i]);
      c->scratch[i] = -1;
    }
}

/* After a failed send: whatever is left in the scratch pipe must not
 * precede the next request's bytes. */
static void
scratch_empty (NbdConn *c)
{
  char junk[4096];
  int avail = 0;
  while (ioctl (c->scratch[0], FIONREAD, &avail) == 0 && avail > 0) {
    ssize_t r = read (c->scratch[0], junk, MIN ((size_t) avail, sizeof junk));
    if (r <= 0 && errno != EINTR)
      break;
  }
  if (avail > 0) {
    /* Could not drain it: do without pipe payloads from now on. The
     * limit stays as it was, so a later pipe payload fails with EIO
     * rather than going out behind stale bytes. */
    conn_scratch_close (c);
  }
}

static int
write_all (int fd, const void *buf, size_t len)
{
  const char *p = buf;
  while (len > 0) {
    ssize_t r = write (fd, p, len);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return errno;
    }
    p += r;
    len -= r;
  }
  return 0;
}

/* Plain socket: the pages go to the socket by reference. */
static int
splice_out (NbdConn *c, size_t len)
{
  while (len > 0) {
    ssize_t r = splice (c->scratch[0], NULL, c->t->fd, NULL, len,
                        SPLICE_F_MOVE);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return errno;
    }
    if (r == 0)
      return EPIPE;
    len -= r;
  }
  return 0;
}

/* A transport with its own record layer (TLS) must see the bytes: read
 * them out of the scratch pipe and send them as usual. The pool does not
 * send pipe payloads over TLS; this keeps a stray one correct. */
static int
read_out (NbdConn *c, size_t len)
{
  char buf[16384];
  while (len > 0) {
    ssize_t r = read (c->scratch[0], buf, MIN (len, sizeof buf));
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return errno;
    }
    if (r == 0)
      return EIO;
    len -= r;
    for (size_t off = 0; off < (size_t) r;) {
      ssize_t w = c->t->ops->send (c->t, buf + off, r - off);
      if (w < 0) {
        if (errno == EINTR || errno == EAGAIN)
          continue;
        return errno;
      }
      off += w;
    }
  }
  return 0;
}

int
conn_send_piped (NbdConn *c, const void *hdr, size_t hlen,
                 const NbdcCmd *cmd)
{
  if (c->scratch[0] < 0 || cmd->count > c->scratch_max)
    return EIO;
  int err = write_all (c->scratch[1], hdr, hlen);
  if (!err) {
    ssize_t n;
    do
      n = tee (cmd->payload_pipe, c->scratch[1], cmd->count, 0);
    while (n < 0 && errno == EINTR);
    /* Short: the submitter's pipe holds less than it said. */
    err = n < 0 ? errno : (size_t) n != cmd->count ? EIO : 0;
  }
  if (!err)
    err = nbdc_transport_is_tls (c->t) ? read_out (c, hlen + cmd->count)
                                       : splice_out (c, hlen + cmd->count);
  if (err)
    scratch_empty (c);
  return err;
}
