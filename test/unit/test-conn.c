/* Unit tests for nbdclient/conn.c: the reply reader against a scripted
 * server on a socketpair. Normal replies (simple, structured split across
 * data and hole chunks, out of order, error chunks, block status) and
 * hostile ones (unknown or stale cookie, chunks outside the range,
 * overlapping or short coverage, oversized data, missing DONE, huge error
 * messages, bad magic, silence): every hostile case must fail the request
 * with EIO, log what was wrong, and never crash or hang. Also our own
 * bounds: a reply to a WRITE still being sent, a request older than the
 * timeout while others are answered.
 *
 * The scripted server checks every request the connection sends against
 * the spec and the export it was given (srv_check): a violation aborts
 * the test.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib.h>
#include "nbdclient/conn.h"
#include "nbdclient/names.h"
#include "nbdclient/protocol.h"

/* ---- a local plain transport over the socketpair (tests only) ---- */

static ssize_t
t_recv (NbdTransport *t, void *buf, size_t len)
{
  return recv (t->fd, buf, len, 0);
}

/* As the plain transport: the reader's no-poll fast path (conn.c) is
 * what these cases exercise; tls-nbdkit covers transports without it. */
static ssize_t
t_recv_nowait (NbdTransport *t, void *buf, size_t len)
{
  return recv (t->fd, buf, len, MSG_DONTWAIT);
}

static ssize_t
t_send (NbdTransport *t, const void *buf, size_t len)
{
  return send (t->fd, buf, len, MSG_NOSIGNAL);
}

static ssize_t
t_sendv (NbdTransport *t, const struct iovec *iov, int n)
{
  struct msghdr m = { .msg_iov = (struct iovec *) iov, .msg_iovlen = n };
  return sendmsg (t->fd, &m, MSG_NOSIGNAL);
}

static void
t_shutdown (NbdTransport *t)
{
  shutdown (t->fd, SHUT_RDWR);
}

static const NbdTransportOps test_ops = {
  .recv = t_recv, .recv_nowait = t_recv_nowait, .send = t_send,
  .sendv = t_sendv,
  .shutdown = t_shutdown, .name = "test",
};

/* ---- capturing warnings (hostile cases must log one) ---- */

static GMutex warn_lock;
static GString *warnings;

/* Warnings are expected here (not fatal, as g_test_init makes them):
 * collected, then passed on to the default handler. A handler for the
 * client's log domain, not a log writer: GLib 2.84's test harness, in its
 * (default) TAP mode, prints g_warning() itself and never reaches the
 * writer, while g_log() gives a domain's own handler the message first in
 * every GLib version. */
static void
capture_handler (const char *domain, GLogLevelFlags level, const char *msg,
                 gpointer data)
{
  if ((level & G_LOG_LEVEL_WARNING) && msg) {
    g_mutex_lock (&warn_lock);
    g_string_append_printf (warnings, "%s\n", msg);
    g_mutex_unlock (&warn_lock);
  }
  g_log_default_handler (domain, level, msg, data);
}

static void
assert_warned (const char *needle)
{
  g_mutex_lock (&warn_lock);
  gboolean found = strstr (warnings->str, needle) != NULL;
  if (!found)
    g_printerr ("warnings so far:\n%s", warnings->str);
  g_mutex_unlock (&warn_lock);
  g_assert_true (found);
}

/* ---- fixture ---- */

typedef struct {
  int srv;
  NbdConn *conn;
  NbdTransport *t;
  NbdExport exp;              /* what the scripted server "negotiated" */
} Fx;

static void
fx_start (Fx *fx, gboolean structured, unsigned depth, unsigned timeout)
{
  int sv[2];
  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
                   ==, 0);
  fx->srv = sv[1];
  NbdTransport *t = g_new0 (NbdTransport, 1);
  t->ops = &test_ops;
  t->fd = sv[0];
  fx->t = t;
  NbdExport exp = {
    .size = 1 << 20,
    .eflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA
      | NBD_FLAG_SEND_TRIM,
    .min_block = 1, .pref_block = 4096,
    .max_block = 1 << 20, .structured = structured,
    .base_allocation = structured, .base_allocation_id = 7,
  };
  fx->exp = exp;
  NbdcConnConfig cfg = {
    .max_in_flight = depth, .request_timeout = timeout, .name = "test",
  };
  fx->conn = nbdc_conn_new (t, &exp, &cfg);
  g_mutex_lock (&warn_lock);
  g_string_truncate (warnings, 0);
  g_mutex_unlock (&warn_lock);
}

static void
fx_stop (Fx *fx)
{
  /* Sends DISC and shuts its own side down: no help from the server. */
  nbdc_conn_free (fx->conn);
  close (fx->srv);
}

/* ---- a request we can wait for ---- */

typedef struct {
  GMutex lock;
  GCond cond;
  gboolean done;
  int err;
  GString *extents;
} Waiter;

static void
w_init (Waiter *w)
{
  g_mutex_init (&w->lock);
  g_cond_init (&w->cond);
  w->done = FALSE;
  w->err = -1;
  w->extents = g_string_new ("");
}

static void
w_done (void *opaque, int err)
{
  Waiter *w = opaque;
  g_mutex_lock (&w->lock);
  g_assert_false (w->done);       /* exactly once */
  w->done = TRUE;
  w->err = err;
  g_cond_signal (&w->cond);
  g_mutex_unlock (&w->lock);
}

static void
w_extent (void *opaque, uint64_t off, uint64_t len, uint32_t flags)
{
  Waiter *w = opaque;
  g_string_append_printf (w->extents, "%" G_GUINT64_FORMAT "+%"
                          G_GUINT64_FORMAT ":%u ", off, len, flags);
}

static int
w_wait (Waiter *w)
{
  gint64 end = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
  g_mutex_lock (&w->lock);
  while (!w->done)
    if (!g_cond_wait_until (&w->cond, &w->lock, end))
      g_error ("request did not complete within 10 s");
  g_mutex_unlock (&w->lock);
  return w->err;
}

static void
w_clear (Waiter *w)
{
  g_string_free (w->extents, TRUE);
  g_mutex_clear (&w->lock);
  g_cond_clear (&w->cond);
}

static void
submit (Fx *fx, Waiter *w, uint16_t type, uint16_t flags, uint64_t off,
        uint32_t count, void *buf)
{
  w_init (w);
  NbdcCmd cmd = {
    .type = type, .flags = flags, .offset = off, .count = count, .buf = buf,
    .extent = w_extent, .done = w_done, .opaque = w,
  };
  nbdc_conn_submit (fx->conn, &cmd);
}

/* ---- the scripted server ---- */

typedef struct {
  uint16_t flags, type;
  uint64_t cookie, offset;
  uint32_t count;
} Req;

static void
read_all (int fd, void *buf, size_t len)
{
  char *p = buf;
  while (len > 0) {
    ssize_t r = read (fd, p, len);
    g_assert_cmpint (r, >, 0);
    p += r;
    len -= r;
  }
}

static void
write_all (int fd, const void *buf, size_t len)
{
  const char *p = buf;
  while (len > 0) {
    ssize_t r = send (fd, p, len, MSG_NOSIGNAL);
    if (r < 0)                /* the client hung up: fine in hostile cases */
      return;
    p += r;
    len -= r;
  }
}

#define VIOLATION(...) \
  g_error ("scripted server: VIOLATION: " __VA_ARGS__)

/* Every request against the spec (nbd-proto.md "Request message",
 * "Request types", "Size constraints") and what fx->exp says was
 * negotiated. */
static void
srv_check (Fx *fx, uint32_t magic, const Req *r)
{
  const NbdExport *e = &fx->exp;
  if (magic != NBD_REQUEST_MAGIC)
    VIOLATION ("request magic 0x%08x", magic);
  uint16_t allowed;
  switch (r->type) {
  case NBD_CMD_READ:
    allowed = e->structured ? NBD_CMD_FLAG_DF : 0;
    break;
  case NBD_CMD_WRITE:
    allowed = e->eflags & NBD_FLAG_SEND_FUA ? NBD_CMD_FLAG_FUA : 0;
    break;
  case NBD_CMD_FLUSH:
  case NBD_CMD_DISC:
    if (r->type == NBD_CMD_FLUSH && !(e->eflags & NBD_FLAG_SEND_FLUSH))
      VIOLATION ("FLUSH not negotiated");
    if (r->offset || r->count || r->flags)
      VIOLATION ("%s with offset %" G_GUINT64_FORMAT ", length %u, flags "
                 "0x%x (must be 0)", nbdc_cmd_name (r->type), r->offset,
                 r->count, r->flags);
    return;
  case NBD_CMD_TRIM:
    if (!(e->eflags & NBD_FLAG_SEND_TRIM))
      VIOLATION ("TRIM not negotiated");
    allowed = e->eflags & NBD_FLAG_SEND_FUA ? NBD_CMD_FLAG_FUA : 0;
    break;
  case NBD_CMD_BLOCK_STATUS:
    if (!e->base_allocation)
      VIOLATION ("BLOCK_STATUS without a negotiated context");
    allowed = NBD_CMD_FLAG_REQ_ONE;
    break;
  default:
    VIOLATION ("command %u was not negotiated", r->type);
  }
  if (r->flags & ~allowed)
    VIOLATION ("%s with flags 0x%x (allowed 0x%x)", nbdc_cmd_name (r->type),
               r->flags, allowed);
  if (r->count == 0)
    VIOLATION ("%s of length 0", nbdc_cmd_name (r->type));
  if (r->offset > e->size || r->count > e->size - r->offset)
    VIOLATION ("%s %" G_GUINT64_FORMAT "+%u past the end (%" G_GUINT64_FORMAT
               ")", nbdc_cmd_name (r->type), r->offset, r->count, e->size);
  uint32_t min = MAX (e->min_block, 1);
  uint32_t max = e->max_block ? e->max_block : NBD_DEFAULT_MAX_PAYLOAD;
  if (r->offset % min || r->count % min)
    VIOLATION ("%s %" G_GUINT64_FORMAT "+%u not aligned to %u",
               nbdc_cmd_name (r->type), r->offset, r->count, min);
  if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE)
      && r->count > max)
    VIOLATION ("%s of %u bytes over the maximum payload %u",
               nbdc_cmd_name (r->type), r->count, max);
}

/* Reads and checks one request header (not the payload). */
static Req
srv_req_header (Fx *fx)
{
  struct nbd_request h;
  read_all (fx->srv, &h, sizeof h);
  Req r = {
    GUINT16_FROM_BE (h.flags), GUINT16_FROM_BE (h.type),
    GUINT64_FROM_BE (h.cookie), GUINT64_FROM_BE (h.offset),
    GUINT32_FROM_BE (h.count),
  };
  srv_check (fx, GUINT32_FROM_BE (h.magic), &r);
  return r;
}

static Req
srv_req (Fx *fx, void *payload)
{
  Req r = srv_req_header (fx);
  if (r.type == NBD_CMD_WRITE) {
    g_autofree char *tmp = g_malloc (r.count);
    read_all (fx->srv, tmp, r.count);
    if (payload)
      memcpy (payload, tmp, r.count);
  }
  return r;
}

static void
srv_simple (Fx *fx, uint64_t cookie, uint32_t error, const void *data,
            size_t len)
{
  struct nbd_simple_reply h = {
    GUINT32_TO_BE (NBD_SIMPLE_REPLY_MAGIC), GUINT32_TO_BE (error),
    GUINT64_TO_BE (cookie),
  };
  write_all (fx->srv, &h, sizeof h);
  if (len)
    write_all (fx->srv, data, len);
}

static void
srv_chunk (Fx *fx, uint16_t flags, uint16_t type, uint64_t cookie,
           const void *payload, uint32_t len)
{
  struct nbd_structured_reply h = {
    GUINT32_TO_BE (NBD_STRUCTURED_REPLY_MAGIC), GUINT16_TO_BE (flags),
    GUINT16_TO_BE (type), GUINT64_TO_BE (cookie), GUINT32_TO_BE (len),
  };
  write_all (fx->srv, &h, sizeof h);
  if (len && payload)
    write_all (fx->srv, payload, len);
}

static void
srv_data (Fx *fx, uint16_t flags, uint64_t cookie, uint64_t off,
          const void *data, uint32_t len)
{
  g_autofree char *p = g_malloc (8 + len);
  uint64_t be = GUINT64_TO_BE (off);
  memcpy (p, &be, 8);
  memcpy (p + 8, data, len);
  srv_chunk (fx, flags, NBD_REPLY_TYPE_OFFSET_DATA, cookie, p, 8 + len);
}

static void
srv_hole (Fx *fx, uint16_t flags, uint64_t cookie, uint64_t off,
          uint32_t len)
{
  struct nbd_structured_reply_offset_hole h = {
    GUINT64_TO_BE (off), GUINT32_TO_BE (len),
  };
  srv_chunk (fx, flags, NBD_REPLY_TYPE_OFFSET_HOLE, cookie, &h, sizeof h);
}

static void
srv_error (Fx *fx, uint16_t flags, uint64_t cookie, uint32_t err,
           const char *msg)
{
  size_t n = strlen (msg);
  g_autofree char *p = g_malloc (6 + n);
  struct nbd_structured_reply_error e = {
    GUINT32_TO_BE (err), GUINT16_TO_BE (n),
  };
  memcpy (p, &e, 6);
  memcpy (p + 6, msg, n);
  srv_chunk (fx, flags, NBD_REPLY_TYPE_ERROR, cookie, p, 6 + n);
}

static void
srv_done (Fx *fx, uint64_t cookie)
{
  srv_chunk (fx, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, cookie, NULL, 0);
}

static void
fill (char *buf, size_t len, int seed)
{
  for (size_t i = 0; i < len; i++)
    buf[i] = (char) (i * 7 + seed);
}

/* ---- normal replies ---- */

static void
test_simple (void)
{
  Fx fx;
  fx_start (&fx, FALSE, 0, 0);
  char data[512], buf[512];
  fill (data, sizeof data, 1);

  Waiter w;
  submit (&fx, &w, NBD_CMD_READ, 0, 4096, sizeof buf, buf);
  Req r = srv_req (&fx, NULL);
  g_assert_cmpuint (r.type, ==, NBD_CMD_READ);
  g_assert_cmpuint (r.offset, ==, 4096);
  g_assert_cmpuint (r.count, ==, 512);
  srv_simple (&fx, r.cookie, 0, data, sizeof data);
  g_assert_cmpint (w_wait (&w), ==, 0);
  g_assert_cmpmem (buf, sizeof buf, data, sizeof data);
  w_clear (&w);

  /* A write's payload travels with its header. */
  char got[512];
  submit (&fx, &w, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 0, sizeof data, data);
  r = srv_req (&fx, got);
  g_assert_cmpuint (r.type, ==, NBD_CMD_WRITE);
  g_assert_cmpuint (r.flags, ==, NBD_CMD_FLAG_FUA);
  g_assert_cmpmem (got, sizeof got, data, sizeof data);
  srv_simple (&fx, r.cookie, 0, NULL, 0);
  g_assert_cmpint (w_wait (&w), ==, 0);
  w_clear (&w);

  /* Errors map to errno; a failed read carries no payload. */
  submit (&fx, &w, NBD_CMD_WRITE, 0, 0, sizeof data, data);
  r = srv_req (&fx, NULL);
  srv_simple (&fx, r.cookie, NBD_ENOSPC, NULL, 0);
  g_assert_cmpint (w_wait (&w), ==, ENOSPC);
  w_clear (&w);
  submit (&fx, &w, NBD_CMD_READ, 0, 0, sizeof buf, buf);
  r = srv_req (&fx, NULL);
  srv_simple (&fx, r.cookie, NBD_EIO, NULL, 0);
  g_assert_cmpint (w_wait (&w), ==, EIO);
  w_clear (&w);
  g_assert_true (nbdc_conn_is_alive (fx.conn));
  fx_stop (&fx);
}

static void
test_structured_split (void)
{
  Fx fx;
  fx_start (&fx, TRUE, 0, 0);
  char data[1024], buf[2048];
  fill (data, sizeof data, 3);
  memset (buf, 0xff, sizeof buf);

  Waiter w;
  submit (&fx, &w, NBD_CMD_READ, 0, 8192, sizeof buf, buf);
  Req r = srv_req (&fx, NULL);
  /* Out of order: the hole in the middle first, then data at both ends. */
  srv_hole (&fx, 0, r.cookie, 8192 + 512, 1024);
  srv_data (&fx, 0, r.cookie, 8192 + 1536, data + 512, 512);
  srv_data (&fx, 0, r.cookie, 8192, data, 512);
  srv_done (&fx, r.cookie);
  g_assert_cmpint (w_wait (&w), ==, 0);
  g_assert_cmpmem (buf, 512, data, 512);
  for (int i = 512; i < 1536; i++)
    g_assert_cmpint (buf[i], ==, 0);
  g_assert_cmpmem (buf + 1536, 512, data + 512, 512);
  w_clear (&w);

  /* DONE may ride on the last data chunk; simple replies to non-reads
   * are still allowed. */
  submit (&fx, &w, NBD_CMD_READ, 0, 0, 512, buf);
  r = srv_req (&fx, NULL);
  srv_data (&fx, NBD_REPLY_FLAG_DONE, r.cookie, 0, data, 512);
  g_assert_cmpint (w_wait (&w), ==, 0);
  g_assert_cmpmem (buf, 512, data, 512);
  w_clear (&w);
  submit (&fx, &w, NBD_CMD_FLUSH, 0, 0, 0, NULL);
  r = srv_req (&fx, NULL);
  srv_simple (&fx, r.cookie, 0, NULL, 0);
  g_assert_cmpint (w_wait (&w), ==, 0);
  w_clear (&w);
  fx_stop (&fx);
}

static void
test_structured_error (void)
{
  Fx fx;
  fx_start (&fx, TRUE, 0, 0);
  char buf[1024], data[512];
  fill (data, sizeof data, 5);
  Waiter w;
  submit (&fx, &w, NBD_CMD_READ, 0, 0, sizeof buf, buf);
  Req r = srv_req (&fx, NULL);
  srv_data (&fx, 0, r.cookie, 0, data, sizeof data);
  srv_error (&fx, 0, r.cookie, NBD_EPERM, "no \x01 way");
  srv_done (&fx, r.cookie);
  g_assert_cmpint (w_wait (&w), ==, EPERM);
  w_clear (&w);

  /* An error chunk does not hurt the connection. */
  submit (&fx, &w, NBD_CMD_TRIM, 0, 0, 4096, NULL);
  r = srv_req (&fx, NULL);
  srv_error (&fx, NBD_REPLY_FLAG_DONE, r.cookie, NBD_ENOTSUP, "");
  g_assert_cmpint (w_wait (&w), ==, ENOTSUP);
  w_clear (&w);
  g_assert_true (nbdc_conn_is_alive (fx.conn));
  fx_stop (&fx);
}

static void
test_block_status (void)
{
  Fx fx;
  fx_start (&fx, TRUE, 0, 0);
  Waiter w;
  submit (&fx, &w, NBD_CMD_BLOCK_STATUS, 0, 4096, 8192, NULL);
  Req r = srv_req (&fx, NULL);
  g_assert_cmpuint (r.type, ==, NBD_CMD_BLOCK_STATUS);
  /* The last extent may run past the request: it is clipped. */
  uint32_t p[5] = {
    GUINT32_TO_BE (7), GUINT32_TO_BE (4096), GUINT32_TO_BE (0),
    GUINT32_TO_BE (65536), GUINT32_TO_BE (3),
  };
  srv_chunk (&fx, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS,
             r.cookie, p, sizeof p);
  g_assert_cmpint (w_wait (&w), ==, 0);
  g_assert_cmpstr (w.extents->str, ==, "4096+4096:0 8192+4096:3 ");
  w_clear (&w);
  fx_stop (&fx);
}

/* More requests than the depth: queued, all complete, replies in any
 * order. */
static void
test_depth (void)
{
  Fx fx;
  fx_start (&fx, FALSE, 2, 0);
  enum { N = 6 };
  Waiter w[N];
  char buf[N][64];
  for (int i = 0; i < N; i++)
    submit (&fx, &w[i], NBD_CMD_READ, 0, i * 64, 64, buf[i]);
  for (int round = 0; round < N / 2; round++) {
    Req a = srv_req (&fx, NULL);
    Req b = srv_req (&fx, NULL);
    char d[64];
    fill (d, 64, b.offset / 64);
    srv_simple (&fx, b.cookie, 0, d, 64);
    fill (d, 64, a.offset / 64);
    srv_simple (&fx, a.cookie, 0, d, 64);
  }
  for (int i = 0; i < N; i++) {
    char d[64];
    fill (d, 64, i);
    g_assert_cmpint (w_wait (&w[i]), ==, 0);
    g_assert_cmpmem (buf[i], 64, d, 64);
    w_clear (&w[i]);
  }
  fx_stop (&fx);
}

/* ---- hostile replies: EIO, a warning naming the problem, no crash ---- */

/* Runs one read of 1024 bytes at 4096 against a script and checks that it
 * fails with EIO and that the connection is dead afterwards. */
typedef void (*Script) (Fx *fx, Req *r);

static void
hostile (Script script, const char *needle, unsigned timeout)
{
  Fx fx;
  fx_start (&fx, TRUE, 1, timeout);
  char buf[1024];
  Waiter w;
  submit (&fx, &w, NBD_CMD_READ, 0, 4096, sizeof buf, buf);
  Req r = srv_req (&fx, NULL);
  script (&fx, &r);
  g_assert_cmpint (w_wait (&w), ==, EIO);
  w_clear (&w);
  g_assert_false (nbdc_conn_is_alive (fx.conn));
  assert_warned (needle);
  /* Anything submitted afterwards fails at once. */
  submit (&fx, &w, NBD_CMD_READ, 0, 0, 16, buf);
  g_assert_cmpint (w_wait (&w), ==, EIO);
  w_clear (&w);
  fx_stop (&fx);
}

static void
s_unknown_cookie (Fx *fx, Req *r)
{
  srv_data (fx, NBD_REPLY_FLAG_DONE, r->cookie ^ 0x55, 4096, "x", 1);
}

static void
s_outside (Fx *fx, Req *r)
{
  char d[16] = { 0 };
  srv_data (fx, NBD_REPLY_FLAG_DONE, r->cookie, 4096 - 8, d, 16);
}

static void
s_overlap (Fx *fx, Req *r)
{
  char d[512] = { 0 };
  srv_data (fx, 0, r->cookie, 4096, d, 512);
  srv_hole (fx, 0, r->cookie, 4096 + 256, 768);
}

static void
s_short (Fx *fx, Req *r)
{
  char d[512] = { 0 };
  srv_data (fx, 0, r->cookie, 4096, d, 512);
  srv_done (fx, r->cookie);
}

static void
s_too_long (Fx *fx, Req *r)
{
  char d[2048] = { 0 };
  srv_data (fx, NBD_REPLY_FLAG_DONE, r->cookie, 4096, d, sizeof d);
}

static void
s_eof (Fx *fx, Req *r)
{
  char d[512] = { 0 };
  srv_data (fx, 0, r->cookie, 4096, d, 512);
  shutdown (fx->srv, SHUT_WR);
}

static void
s_huge_error (Fx *fx, Req *r)
{
  /* Claims a 60000-byte message: we must not read or allocate it. */
  struct nbd_structured_reply_error e = {
    GUINT32_TO_BE (NBD_EIO), GUINT16_TO_BE (60000),
  };
  struct nbd_structured_reply h = {
    GUINT32_TO_BE (NBD_STRUCTURED_REPLY_MAGIC),
    GUINT16_TO_BE (NBD_REPLY_FLAG_DONE), GUINT16_TO_BE (NBD_REPLY_TYPE_ERROR),
    GUINT64_TO_BE (r->cookie), GUINT32_TO_BE (6 + 60000),
  };
  write_all (fx->srv, &h, sizeof h);
  write_all (fx->srv, &e, 6);
}

static void
s_bad_magic (Fx *fx, Req *r)
{
  uint32_t junk[5] = { GUINT32_TO_BE (0xdeadbeef) };
  write_all (fx->srv, junk, sizeof junk);
}

static void
s_silence (Fx *fx, Req *r)
{
}

static void
s_simple_read (Fx *fx, Req *r)
{
  /* Simple replies to reads are forbidden once structured replies are on. */
  srv_simple (fx, r->cookie, 0, NULL, 0);
}

static void
s_bad_type (Fx *fx, Req *r)
{
  uint32_t p[3] = { GUINT32_TO_BE (7), GUINT32_TO_BE (1024),
                    GUINT32_TO_BE (0) };
  srv_chunk (fx, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS,
             r->cookie, p, sizeof p);
}

static void
s_duplicate_done (Fx *fx, Req *r)
{
  char d[1024] = { 0 };
  srv_data (fx, NBD_REPLY_FLAG_DONE, r->cookie, 4096, d, sizeof d);
  srv_done (fx, r->cookie);
}

static void test_unknown_cookie (void) { hostile (s_unknown_cookie, "unknown cookie", 0); }
static void test_outside (void) { hostile (s_outside, "outside the requested range", 0); }
static void test_overlap (void) { hostile (s_overlap, "overlaps", 0); }
static void test_short (void) { hostile (s_short, "512 of 1024 bytes covered", 0); }
static void test_too_long (void) { hostile (s_too_long, "outside the requested range", 0); }
static void test_eof (void) { hostile (s_eof, "server closed the connection", 0); }
static void test_huge_error (void) { hostile (s_huge_error, "too long", 0); }
static void test_bad_magic (void) { hostile (s_bad_magic, "bad reply magic 0xdeadbeef", 0); }
static void test_timeout (void) { hostile (s_silence, "no data from the server for 1 s", 1); }

/* A reply to a WRITE whose payload (1 MiB: more than the socket buffers
 * hold) the server never read, then nothing: a protocol violation; the
 * write fails with EIO, never success, and the blocked sender is freed.
 * No timeout set: the violation alone must end it. */
typedef struct {
  Fx *fx;
  Waiter *w;
  char *data;
  size_t len;
} EarlyWrite;

static gpointer
early_write_submit (gpointer data)
{
  EarlyWrite *e = data;
  submit (e->fx, e->w, NBD_CMD_WRITE, 0, 0, e->len, e->data);
  return NULL;
}

static void
test_early_write_reply (void)
{
  Fx fx;
  fx_start (&fx, FALSE, 0, 0);
  size_t len = 1 << 20;
  g_autofree char *data = g_malloc0 (len);
  Waiter w;
  /* From another thread: a submitter may send the request itself, and
   * this one blocks on the full socket. */
  EarlyWrite ew = { &fx, &w, data, len };
  GThread *th = g_thread_new ("submit", early_write_submit, &ew);
  Req r = srv_req_header (&fx);
  g_assert_cmpuint (r.type, ==, NBD_CMD_WRITE);
  srv_simple (&fx, r.cookie, 0, NULL, 0);
  g_assert_cmpint (w_wait (&w), ==, EIO);
  g_thread_join (th);
  w_clear (&w);
  assert_warned ("before the request was sent in full");
  g_assert_false (nbdc_conn_is_alive (fx.conn));
  fx_stop (&fx);
}

/* One READ never answered while others are (the connection is never
 * silent): the timeout (1 s) bounds its age: EIO within 1-3 s. */
static void
test_request_age (void)
{
  Fx fx;
  fx_start (&fx, FALSE, 0, 1);
  char stuck[64], buf[64];
  Waiter ws;
  gint64 start = g_get_monotonic_time ();
  submit (&fx, &ws, NBD_CMD_READ, 0, 0, sizeof stuck, stuck);
  Req first = srv_req (&fx, NULL);
  for (int i = 0; i < 100; i++) {
    g_mutex_lock (&ws.lock);
    gboolean done = ws.done;
    g_mutex_unlock (&ws.lock);
    if (done)
      break;
    Waiter w;
    submit (&fx, &w, NBD_CMD_READ, 0, 64, sizeof buf, buf);
    if (!nbdc_conn_is_alive (fx.conn)) {
      w_wait (&w);
      w_clear (&w);
      break;
    }
    Req r = srv_req (&fx, NULL);
    g_assert_cmpuint (r.cookie, !=, first.cookie);
    char zero[64] = { 0 };
    srv_simple (&fx, r.cookie, 0, zero, sizeof zero);
    w_wait (&w);
    w_clear (&w);
    g_usleep (50000);
  }
  g_assert_cmpint (w_wait (&ws), ==, EIO);
  gint64 ms = (g_get_monotonic_time () - start) / 1000;
  g_assert_cmpint (ms, >=, 900);
  g_assert_cmpint (ms, <=, 3000);
  w_clear (&ws);
  assert_warned ("no reply to read (offset 0, 64 bytes) for 1 s");
  fx_stop (&fx);
}
static void test_simple_read (void) { hostile (s_simple_read, "simple reply to a read", 0); }
static void test_bad_type (void) { hostile (s_bad_type, "block status chunk in reply to read", 0); }

/* Block status replies that break the rules: a zero-length extent, more
 * extents after the requested length is covered, two extents although
 * NBD_CMD_FLAG_REQ_ONE was set. */
static void
hostile_status (uint16_t flags, const uint32_t *desc, size_t n,
                const char *needle)
{
  Fx fx;
  fx_start (&fx, TRUE, 0, 0);
  Waiter w;
  submit (&fx, &w, NBD_CMD_BLOCK_STATUS, flags, 0, 8192, NULL);
  Req r = srv_req (&fx, NULL);
  g_autofree uint32_t *p = g_new (uint32_t, 1 + n);
  p[0] = GUINT32_TO_BE (7);
  for (size_t i = 0; i < n; i++)
    p[1 + i] = GUINT32_TO_BE (desc[i]);
  srv_chunk (&fx, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, r.cookie,
             p, 4 * (1 + n));
  g_assert_cmpint (w_wait (&w), ==, EIO);
  w_clear (&w);
  g_assert_false (nbdc_conn_is_alive (fx.conn));
  assert_warned (needle);
  fx_stop (&fx);
}

static void
test_status_zero_extent (void)
{
  const uint32_t d[] = { 4096, 0, 0, 0 };
  hostile_status (0, d, 4, "extent of length 0");
}

static void
test_status_past_end (void)
{
  const uint32_t d[] = { 8192, 0, 4096, 3 };
  hostile_status (0, d, 4, "go past the requested length");
}

static void
test_status_req_one (void)
{
  const uint32_t d[] = { 4096, 0, 4096, 3 };
  hostile_status (NBD_CMD_FLAG_REQ_ONE, d, 4, "although we asked for one");
}

/* The second DONE arrives after the read completed: its cookie is no
 * longer in flight. The read itself succeeded. */
static void
test_duplicate_done (void)
{
  Fx fx;
  fx_start (&fx, TRUE, 1, 0);
  char buf[1024];
  Waiter w;
  submit (&fx, &w, NBD_CMD_READ, 0, 4096, sizeof buf, buf);
  Req r = srv_req (&fx, NULL);
  s_duplicate_done (&fx, &r);
  g_assert_cmpint (w_wait (&w), ==, 0);
  w_clear (&w);
  /* Wait for the reader to trip over the second DONE. */
  for (int i = 0; i < 500 && nbdc_conn_is_alive (fx.conn); i++)
    g_usleep (10000);
  g_assert_false (nbdc_conn_is_alive (fx.conn));
  assert_warned ("unknown cookie");
  fx_stop (&fx);
}

/* Stale cookie: slot 0 is reused with a new generation; a reply carrying
 * the old generation must not complete the new request. */
static void
test_stale_cookie (void)
{
  Fx fx;
  fx_start (&fx, FALSE, 1, 0);
  char buf[64], d[64];
  fill (d, sizeof d, 9);
  Waiter w;
  submit (&fx, &w, NBD_CMD_READ, 0, 0, 64, buf);
  Req a = srv_req (&fx, NULL);
  srv_simple (&fx, a.cookie, 0, d, 64);
  g_assert_cmpint (w_wait (&w), ==, 0);
  w_clear (&w);

  submit (&fx, &w, NBD_CMD_READ, 0, 64, 64, buf);
  Req b = srv_req (&fx, NULL);
  g_assert_cmpuint (b.cookie & 0xffffffff, ==, a.cookie & 0xffffffff);
  g_assert_cmpuint (b.cookie, !=, a.cookie);
  srv_simple (&fx, a.cookie, 0, d, 64);
  g_assert_cmpint (w_wait (&w), ==, EIO);
  w_clear (&w);
  assert_warned ("unknown cookie");
  fx_stop (&fx);
}

/* NBD_ESHUTDOWN: the client must soft-disconnect (send NBD_CMD_DISC);
 * the request fails with EIO (no salvage function here). */
static void
test_eshutdown (void)
{
  Fx fx;
  fx_start (&fx, FALSE, 0, 0);
  char buf[64];
  Waiter w;
  submit (&fx, &w, NBD_CMD_READ, 0, 0, 64, buf);
  Req r = srv_req (&fx, NULL);
  srv_simple (&fx, r.cookie, NBD_ESHUTDOWN, NULL, 0);
  Req d = srv_req (&fx, NULL);
  g_assert_cmpuint (d.type, ==, NBD_CMD_DISC);
  shutdown (fx.srv, SHUT_WR);
  g_assert_cmpint (w_wait (&w), ==, EIO);
  w_clear (&w);
  g_assert_false (nbdc_conn_is_alive (fx.conn));
  g_assert_true (nbdc_conn_saw_eshutdown (fx.conn));
  assert_warned ("the server is shutting down");
  fx_stop (&fx);
}

/* "For a successful return, the server MUST use a structured reply,
 * containing exactly one chunk of type NBD_REPLY_TYPE_BLOCK_STATUS per
 * selected context id": a simple reply saying "success" to block status
 * answers nothing and must not pass for an answer. An error may still
 * come as a simple reply. */
static void
test_simple_reply_to_block_status (void)
{
  Fx fx;
  fx_start (&fx, TRUE, 4, 0);
  Waiter w;
  submit (&fx, &w, NBD_CMD_BLOCK_STATUS, 0, 0, 4096, NULL);
  Req a = srv_req (&fx, NULL);
  srv_simple (&fx, a.cookie, NBD_EINVAL, NULL, 0);
  g_assert_cmpint (w_wait (&w), ==, EINVAL);
  w_clear (&w);

  submit (&fx, &w, NBD_CMD_BLOCK_STATUS, 0, 0, 4096, NULL);
  Req b = srv_req (&fx, NULL);
  srv_simple (&fx, b.cookie, 0, NULL, 0);
  g_assert_cmpint (w_wait (&w), ==, EIO);
  g_assert_cmpstr (w.extents->str, ==, "");
  w_clear (&w);
  assert_warned ("simple reply to block status");
  fx_stop (&fx);
}

/* A transport failure with a salvage function hands requests back
 * untouched instead of failing them. */
typedef struct {
  GMutex lock;
  GCond cond;
  int n;
  NbdcCmd cmd;
} Salvaged;

static void
on_salvage (void *opaque, NbdConn *conn, const NbdcCmd *cmd)
{
  Salvaged *s = opaque;
  g_mutex_lock (&s->lock);
  s->n++;
  s->cmd = *cmd;
  g_cond_signal (&s->cond);
  g_mutex_unlock (&s->lock);
}

static void
test_salvage (void)
{
  int sv[2];
  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
  NbdTransport *t = g_new0 (NbdTransport, 1);
  t->ops = &test_ops;
  t->fd = sv[0];
  NbdExport exp = { .size = 1 << 20, .structured = TRUE };
  Salvaged s = { 0 };
  g_mutex_init (&s.lock);
  g_cond_init (&s.cond);
  NbdcConnConfig cfg = { .salvage = on_salvage, .opaque = &s,
                         .name = "salvage" };
  NbdConn *c = nbdc_conn_new (t, &exp, &cfg);
  g_mutex_lock (&warn_lock);
  g_string_truncate (warnings, 0);
  g_mutex_unlock (&warn_lock);
  Fx fx = { .srv = sv[1], .conn = c, .exp = exp };
  Waiter w;
  char buf[64];
  submit (&fx, &w, NBD_CMD_READ, 0, 0, 64, buf);
  srv_req (&fx, NULL);
  close (sv[1]);              /* the server goes away */
  g_mutex_lock (&s.lock);
  while (s.n == 0)
    g_cond_wait (&s.cond, &s.lock);
  g_mutex_unlock (&s.lock);
  g_assert_cmpint (s.n, ==, 1);
  g_assert_true (s.cmd.opaque == &w);
  g_assert_false (w.done);
  assert_warned ("retrying 1 request(s) elsewhere");
  w_clear (&w);
  nbdc_conn_free (c);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  warnings = g_string_new ("");
  g_log_set_always_fatal (G_LOG_FATAL_MASK & ~G_LOG_LEVEL_WARNING
                          & ~G_LOG_LEVEL_CRITICAL);
  g_log_set_handler ("nbdfs-client", G_LOG_LEVEL_MASK | G_LOG_FLAG_FATAL
                     | G_LOG_FLAG_RECURSION, capture_handler, NULL);
  g_test_add_func ("/nbdclient/conn/simple", test_simple);
  g_test_add_func ("/nbdclient/conn/structured-split", test_structured_split);
  g_test_add_func ("/nbdclient/conn/structured-error", test_structured_error);
  g_test_add_func ("/nbdclient/conn/block-status", test_block_status);
  g_test_add_func ("/nbdclient/conn/depth-queue", test_depth);
  g_test_add_func ("/nbdclient/conn/hostile/unknown-cookie",
                   test_unknown_cookie);
  g_test_add_func ("/nbdclient/conn/hostile/stale-cookie", test_stale_cookie);
  g_test_add_func ("/nbdclient/conn/hostile/outside-range", test_outside);
  g_test_add_func ("/nbdclient/conn/hostile/overlap", test_overlap);
  g_test_add_func ("/nbdclient/conn/hostile/short-coverage", test_short);
  g_test_add_func ("/nbdclient/conn/hostile/data-too-long", test_too_long);
  g_test_add_func ("/nbdclient/conn/hostile/no-done-then-eof", test_eof);
  g_test_add_func ("/nbdclient/conn/hostile/huge-error-message",
                   test_huge_error);
  g_test_add_func ("/nbdclient/conn/hostile/bad-magic", test_bad_magic);
  g_test_add_func ("/nbdclient/conn/hostile/timeout", test_timeout);
  g_test_add_func ("/nbdclient/conn/hostile/early-write-reply",
                   test_early_write_reply);
  g_test_add_func ("/nbdclient/conn/hostile/request-age", test_request_age);
  g_test_add_func ("/nbdclient/conn/hostile/simple-reply-to-read",
                   test_simple_read);
  g_test_add_func ("/nbdclient/conn/hostile/unexpected-chunk", test_bad_type);
  g_test_add_func ("/nbdclient/conn/hostile/duplicate-done",
                   test_duplicate_done);
  g_test_add_func ("/nbdclient/conn/hostile/status-zero-extent",
                   test_status_zero_extent);
  g_test_add_func ("/nbdclient/conn/hostile/status-past-end",
                   test_status_past_end);
  g_test_add_func ("/nbdclient/conn/hostile/status-req-one",
                   test_status_req_one);
  g_test_add_func ("/nbdclient/conn/hostile/simple-reply-to-block-status",
                   test_simple_reply_to_block_status);
  g_test_add_func ("/nbdclient/conn/salvage", test_salvage);
  g_test_add_func ("/nbdclient/conn/eshutdown", test_eshutdown);
  return g_test_run ();
}
