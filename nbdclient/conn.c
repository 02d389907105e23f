/* nbdfs — one connection in transmission phase: the in-flight table, the
 * sender thread and the reply reader (which hands each reply to
 * conn-reply.c to parse and check) (nbd-proto.md "Transmission",
 * "Structured reply chunk message", "Structured reply types"; extended
 * headers: doc/proto.md on the spec's extension-ext-header branch,
 * "Request message", "Extended reply chunk message").
 *
 * Threads and ownership (why there is a sender thread at all): a done()
 * callback runs on the reader and may submit more work (read-modify-write
 * does). If the reader itself wrote to the socket it could block on a full
 * send buffer while the server blocks on a full reply buffer: deadlock. So
 * the reader only reads, and anything submitted from a reader or from a
 * completion callback is queued for the sender thread. Other submitters
 * (FUSE workers) write their request themselves when nothing is queued and
 * the send path is free: a qd1 request then costs no thread hand-off.
 * send_lock serialises writers (one request's sendmsg at a time).
 *
 * Only the reader completes an in-flight request or tears the connection
 * down, because only it knows whether it is writing into a request's
 * buffer right now. Others (sender on a send error, nbdc_conn_kill) record
 * a reason and shut the transport down; the reader then sees the failure
 * and does the rest.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <string.h>
#include "nbdclient/conn-internal.h"
#include "nbdclient/names.h"
#include "nbdclient/protocol.h"

#define POLL_STEP_MS      1000

/* Replies are read through a buffer (reader thread only): one recv takes
 * a whole small reply, or several, instead of one recv and one poll per
 * header field and payload. A payload at least RBUF_DIRECT long, met
 * with the buffer empty, is read straight into its destination. */
#define RBUF_SIZE         (64 * 1024)

#define RBUF_DIRECT       (RBUF_SIZE / 2)

/* A reply that names a request whose sendv has not returned yet: if the
 * server read all of it (the only way it may answer, nbd-proto.md
 * "Request message": the reply comes after the request, payload
 * included), the kernel took our last byte and the sender is about to
 * return; we wait this long for it. Still sending then means the server
 * answered before reading the whole request: a protocol violation. */
#define SENT_GRACE_US     (2 * G_USEC_PER_SEC)

/* > 0 on a reader thread (any connection's) and inside done/salvage
 * callbacks: such a thread must never block on a socket send (see the
 * top of the file), so its submissions always go through the queue. */
static __thread unsigned no_direct_send;

static void
req_free (NbdcReq *req)
{
  if (req->covered)
    g_array_free (req->covered, TRUE);
  g_free (req);
}

/* Calls done or salvage outside any lock, then frees. */
static void
req_finish (NbdConn *c, NbdcReq *req, int err, gboolean salvage)
{
  no_direct_send++;
  if (salvage && c->salvage)
    c->salvage (c->opaque, c, &req->cmd);
  else
    req->cmd.done (req->cmd.opaque, err);
  no_direct_send--;
  req_free (req);
}

static void
conn_shutdown_transport (NbdConn *c)
{
  if (c->t->ops->shutdown)
    c->t->ops->shutdown (c->t);
}

/* ---- receiving ---- */

/* The oldest request in flight, if it is older than request_timeout:
 * records which one in c->overdue (for the reason) and returns TRUE.
 * Otherwise *deadline (if not NULL) gets the moment it will be. Reader
 * only. */
static gboolean
conn_overdue (NbdConn *c, gint64 now, gint64 *deadline)
{
  gboolean over = FALSE;
  g_mutex_lock (&c->lock);
  GList *l = c->aged.head;
  if (l) {
    NbdcReq *req = l->data;
    gint64 at = req->sent_at + (gint64) c->timeout * G_USEC_PER_SEC;
    if (now >= at) {
      over = TRUE;
      g_free (c->overdue);
      c->overdue = g_strdup_printf ("no reply to %s (offset %"
                                    G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT
                                    " bytes) for %u s",
                                    nbdc_cmd_name (req->cmd.type),
                                    req->cmd.offset, req->cmd.count,
                                    c->timeout);
    }
    else if (deadline)
      *deadline = at;
  }
  g_mutex_unlock (&c->lock);
  return over;
}

/* Waits until the fd is readable. At a message boundary with nothing in
 * flight there is no deadline; otherwise request_timeout seconds without
 * any byte from the server is a timeout, and so is any request in flight
 * for longer than that (conn_overdue). */
static RecvResult
conn_wait (NbdConn *c, gboolean boundary)
{
  for (;;) {
    int ms = -1;
    /* The timeout before the pending shortcut: a TLS server can keep
     * records without data (no progress) pending forever. */
    if (c->timeout) {
      gint64 now = g_get_monotonic_time ();
      g_mutex_lock (&c->lock);
      gboolean owed = !boundary || c->in_flight > 0;
      gint64 deadline = c->last_progress + (gint64) c->timeout * G_USEC_PER_SEC;
      g_mutex_unlock (&c->lock);
      if (owed && now >= deadline)
        return RECV_TIMEOUT;
      gint64 aged = G_MAXINT64;
      if (conn_overdue (c, now, &aged))
        return RECV_TIMEOUT;
      if (!owed)
        deadline = G_MAXINT64;
      deadline = MIN (deadline, aged);
      ms = POLL_STEP_MS;
      if (deadline != G_MAXINT64 && (deadline - now) / 1000 + 1 < ms)
        ms = (deadline - now) / 1000 + 1;
    }
    if (c->t->ops->pending && c->t->ops->pending (c->t))
      return RECV_OK;
    struct pollfd pfd = { .fd = c->t->fd, .events = POLLIN };
    int r = poll (&pfd, 1, ms);
    if (r > 0)
      return RECV_OK;
    if (r < 0 && errno != EINTR)
      return RECV_ERROR;
  }
}

/* Reads exactly len bytes (from the buffer first). *errp gets errno for
 * RECV_ERROR. With the buffer empty it polls (conn_wait: the request
 * timeout) only where a read would likely block: at a message boundary
 * (the next reply may be a while), after a recv found nothing (EAGAIN),
 * or when the transport cannot recv without waiting (TLS: conn_wait
 * asks its pending() first). Any byte received is progress. */
RecvResult
conn_recv (NbdConn *c, void *buf, size_t len, gboolean boundary, int *errp)
{
  char *p = buf;
  gboolean again = FALSE;
  while (len > 0) {
    if (c->rpos < c->rlen) {
      size_t n = MIN (len, c->rlen - c->rpos);
      memcpy (p, c->rbuf + c->rpos, n);
      c->rpos += n;
      p += n;
      len -= n;
      boundary = FALSE;
      continue;
    }
    c->rpos = c->rlen = 0;
    gboolean nowait = c->t->ops->recv_nowait != NULL;
    if (boundary || again || !nowait) {
      RecvResult w = conn_wait (c, boundary);
      if (w != RECV_OK) {
        *errp = errno;
        return w;
      }
    }
    again = FALSE;
    gboolean direct = len >= RBUF_DIRECT;
    void *dst = direct ? (void *) p : c->rbuf;
    size_t cap = direct ? len : RBUF_SIZE;
    ssize_t r = nowait ? c->t->ops->recv_nowait (c->t, dst, cap)
      : c->t->ops->recv (c->t, dst, cap);
    if (r == 0)
      return RECV_EOF;
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        again = TRUE;
        continue;
      }
      if (errno == EINTR)
        continue;
      *errp = errno;
      return RECV_ERROR;
    }
    if (direct) {
      p += r;
      len -= r;
    }
    else
      c->rlen = r;
    boundary = FALSE;
    if (c->timeout) {
      g_mutex_lock (&c->lock);
      c->last_progress = g_get_monotonic_time ();
      g_mutex_unlock (&c->lock);
    }
  }
  return RECV_OK;
}

/* ---- the reader's failure reasons ---- */

gboolean G_GNUC_PRINTF (2, 3)
violation (Death *d, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  d->violation = TRUE;
  d->why = g_strdup_printf ("server broke the protocol: %s", msg);
  g_free (msg);
  return FALSE;
}

/* Turns a failed conn_recv into a reason. Returns FALSE. */
gboolean
lost (NbdConn *c, Death *d, RecvResult r, int err, const char *what)
{
  g_mutex_lock (&c->lock);
  gboolean stopping = c->stopping;
  char *reason = g_strdup (c->broken_reason);
  g_mutex_unlock (&c->lock);

  if (reason) {
    d->why = reason;
    return FALSE;
  }
  switch (r) {
  case RECV_EOF:
    if (stopping)
      d->clean = TRUE;
    d->why = g_strdup_printf ("server closed the connection while %s", what);
    break;
  case RECV_TIMEOUT:
    d->timeout = TRUE;
    if (c->overdue)
      d->why = g_strdup_printf ("%s while %s", c->overdue, what);
    else
      d->why = g_strdup_printf ("no data from the server for %u s while %s",
                                c->timeout, what);
    break;
  default:
    if (stopping)
      d->clean = TRUE;
    d->why = g_strdup_printf ("%s: %s", what, g_strerror (err));
    break;
  }
  return FALSE;
}

/* Reads and drops len bytes (bounded by the caller). */
gboolean
conn_skip (NbdConn *c, Death *d, uint64_t len, const char *what)
{
  char buf[4096];
  while (len > 0) {
    size_t n = MIN (len, sizeof buf);
    RECV (c, d, buf, n, FALSE, what);
    len -= n;
  }
  return TRUE;
}

/* ---- the in-flight table ---- */

static uint64_t
cookie_of (const Slot *s, uint32_t idx)
{
  return ((uint64_t) s->gen << 32) | idx;
}

/* The request a reply names, or NULL for a free slot, an out-of-range
 * index or an older generation (stale or forged cookie). The request stays
 * in its slot until this (reader) thread removes it. */
NbdcReq *
conn_lookup (NbdConn *c, uint64_t cookie)
{
  uint32_t idx = cookie & 0xffffffff;
  uint32_t gen = cookie >> 32;
  NbdcReq *req = NULL;
  g_mutex_lock (&c->lock);
  if (idx < c->depth && c->slots[idx].req && c->slots[idx].gen == gen)
    req = c->slots[idx].req;
  g_mutex_unlock (&c->lock);
  return req;
}

/* "If the client receives an NBD_ESHUTDOWN error it MUST initiate a soft
 * disconnect": the sender sends NBD_CMD_DISC and shuts the transport
 * down; the reader then finds EOF and tears down as for a lost server
 * (requests salvaged for a reconnect, else EIO). */
void
nbdc_conn_soft_disconnect (NbdConn *c, const char *reason)
{
  g_mutex_lock (&c->lock);
  if (!c->broken && !c->dead) {
    c->broken = TRUE;
    c->broken_reason = g_strdup (reason);
    c->send_disc = TRUE;
  }
  g_cond_broadcast (&c->cond);
  g_mutex_unlock (&c->lock);
}

/* The reply to req is complete: free its slot and call done. A reply
 * to a request whose sendv has not returned yet is left to the sender to
 * complete (as before it returned), once it has: if the server read all
 * of the request, that is at once; if the sender is still writing after
 * SENT_GRACE_US, the server answered before reading the whole request (a
 * WRITE's payload): a protocol violation. The request then completes
 * with EIO, never success, and the teardown (shutdown of the socket)
 * frees a sender blocked on a server that stopped reading. FALSE with *d
 * set on that violation. */
gboolean
conn_complete (NbdConn *c, Death *d, NbdcReq *req, int err)
{
  if (err == ESHUTDOWN) {
    /* Not this request's fault: it stays in flight and is retried (or
     * failed) with the rest when the connection goes. */
    g_mutex_lock (&c->lock);
    c->eshutdown = TRUE;
    g_mutex_unlock (&c->lock);
    nbdc_conn_soft_disconnect (c, "the server is shutting down "
                               "(NBD_ESHUTDOWN)");
    return TRUE;
  }
  if (c->debug)
    g_debug ("%s: cookie 0x%" G_GINT64_MODIFIER "x: %s offset %"
             G_GUINT64_FORMAT " count %" G_GUINT64_FORMAT " -> %s",
             c->name, cookie_of (&c->slots[req->slot], req->slot),
             nbdc_cmd_name (req->cmd.type), req->cmd.offset, req->cmd.count,
             err ? g_strerror (err) : "ok");
  g_mutex_lock (&c->lock);
  c->slots[req->slot].req = NULL;
  c->free_slots[c->n_free++] = req->slot;
  c->in_flight--;
  g_queue_unlink (&c->aged, &req->age_link);
  /* The sender can only use a freed slot if something is queued (it
   * waits for queue.length > 0 && n_free > 0); drain waits for idle. */
  if (c->sender_waiting && c->queue.length > 0)
    g_cond_signal (&c->cond);
  if (c->idle_waiters && c->in_flight == 0 && c->queue.length == 0)
    g_cond_broadcast (&c->idle);
  if (req->sending) {
    req->finished = TRUE;
    req->final_err = err;
    /* The sender frees req once it is done: from here on only
     * c->awaited (cleared by the sender, under lock) says whether it
     * still lives. */
    c->awaited = req;
    gint64 until = g_get_monotonic_time () + SENT_GRACE_US;
    while (c->awaited == req)
      if (!g_cond_wait_until (&c->sent, &c->lock, until))
        break;
    if (c->awaited != req) {
      g_mutex_unlock (&c->lock);
      return TRUE;
    }
    c->awaited = NULL;
    req->final_err = EIO;
    req->final_salvage = FALSE;
    char *what = g_strdup_printf ("%s (offset %" G_GUINT64_FORMAT ", %"
                                  G_GUINT64_FORMAT " bytes)",
                                  nbdc_cmd_name (req->cmd.type),
                                  req->cmd.offset, req->cmd.count);
    g_mutex_unlock (&c->lock);
    violation (d, "reply to %s before the request was sent in full", what);
    g_free (what);
    return FALSE;
  }
  g_mutex_unlock (&c->lock);
  req_finish (c, req, err, FALSE);
  return TRUE;
}

/* ---- the reader ---- */

/* Tears the connection down: every request still here completes with EIO
 * (or is salvaged). Reader thread only. */
static void
conn_die (NbdConn *c, Death *d)
{
  GPtrArray *done = g_ptr_array_new ();
  GPtrArray *retry = g_ptr_array_new ();
  gboolean salvage = c->salvage && !d->violation && !d->clean;
  /* A request the server sat on for request_timeout seconds fails with
   * EIO instead of being retried: a server that accepts and never
   * answers would otherwise keep it (and its caller) waiting forever,
   * one reconnect after another. Requests it never saw are retried. */
  gboolean salvage_sent = salvage && !d->timeout;

  g_mutex_lock (&c->lock);
  c->dead = TRUE;
  unsigned sent = c->in_flight, queued = c->queue.length;
  /* Logged before any request completes (a sender may complete one as
   * soon as we let go of the lock), so the reason always comes first. */
  if (!d->clean || sent + queued > 0) {
    if (salvage_sent)
      g_warning ("%s: %s; retrying %u request(s) elsewhere", c->name,
                 d->why, sent + queued);
    else if (salvage)
      g_warning ("%s: %s; %u request(s) sent fail with EIO, %u queued "
                 "retried elsewhere", c->name, d->why, sent, queued);
    else
      g_warning ("%s: %s; %u request(s) fail with EIO", c->name, d->why,
                 sent + queued);
  }
  NbdcReq *req;
  while ((req = g_queue_pop_head (&c->queue)))
    g_ptr_array_add (salvage ? retry : done, req);
  gboolean stopping = c->stopping;
  g_cond_broadcast (&c->cond);
  g_cond_broadcast (&c->idle);
  g_mutex_unlock (&c->lock);

  conn_shutdown_transport (c);
  /* dead_fn first (a pool starts its reconnect, so salvaged requests can
   * wait for it, and takes stock of unflushed writes), then the requests
   * in the table: one a sender is still writing is only marked, and the
   * sender completes it, so it must not be marked before dead_fn ran. */
  if (c->dead_fn && !stopping)
    c->dead_fn (c->opaque, c);
  g_mutex_lock (&c->lock);
  for (unsigned i = 0; i < c->depth; i++) {
    req = c->slots[i].req;
    if (!req)
      continue;
    c->slots[i].req = NULL;
    if (req->sending) {
      req->finished = TRUE;
      req->final_err = EIO;
      req->final_salvage = salvage_sent;
    }
    else
      g_ptr_array_add (salvage_sent ? retry : done, req);
  }
  c->in_flight = 0;
  g_queue_init (&c->aged);
  g_mutex_unlock (&c->lock);
  for (guint i = 0; i < done->len; i++)
    req_finish (c, done->pdata[i], EIO, FALSE);
  for (guint i = 0; i < retry->len; i++)
    req_finish (c, retry->pdata[i], EIO, TRUE);
  g_ptr_array_free (done, TRUE);
  g_ptr_array_free (retry, TRUE);
}

static gpointer
conn_reader (gpointer data)
{
  NbdConn *c = data;
  Death d = { 0 };
  /* Also covers the dead_fn callback and the pool code it runs. */
  no_direct_send++;
  for (;;) {
    uint8_t hdr[sizeof (struct nbd_extended_reply)];
    int err = 0;
    /* Replies already buffered are parsed without conn_wait: check the
     * age bound here too, or a server that keeps answering everything
     * but one request would keep that one waiting forever. */
    if (c->timeout && c->rpos < c->rlen
        && conn_overdue (c, g_get_monotonic_time (), NULL)) {
      lost (c, &d, RECV_TIMEOUT, 0, "waiting for a reply");
      break;
    }
    RecvResult r = conn_recv (c, hdr, 4, TRUE, &err);
    if (r != RECV_OK) {
      lost (c, &d, r, err, "waiting for a reply");
      break;
    }
    uint32_t magic;
    memcpy (&magic, hdr, 4);
    magic = GUINT32_FROM_BE (magic);
    gboolean ok;
    if (magic == NBD_EXTENDED_REPLY_MAGIC) {
      r = conn_recv (c, hdr + 4, sizeof (struct nbd_extended_reply) - 4,
                     FALSE, &err);
      ok = r == RECV_OK ? conn_handle_extended (c, &d, hdr)
        : lost (c, &d, r, err, "reading a reply header");
    }
    else if (magic == NBD_SIMPLE_REPLY_MAGIC && c->extended)
      /* "If extended headers have been negotiated, a simple reply MUST
       * NOT be used." */
      ok = violation (&d, "simple reply although extended headers were "
                      "negotiated");
    else if (magic == NBD_SIMPLE_REPLY_MAGIC) {
      r = conn_recv (c, hdr + 4, sizeof (struct nbd_simple_reply) - 4, FALSE,
                     &err);
      ok = r == RECV_OK ? conn_handle_simple (c, &d, hdr)
        : lost (c, &d, r, err, "reading a reply header");
    }
    else if (magic == NBD_STRUCTURED_REPLY_MAGIC) {
      r = conn_recv (c, hdr + 4, sizeof (struct nbd_structured_reply) - 4,
                     FALSE, &err);
      ok = r == RECV_OK ? conn_handle_structured (c, &d, hdr)
        : lost (c, &d, r, err, "reading a reply header");
    }
    else
      ok = violation (&d, "bad reply magic 0x%08" G_GINT32_MODIFIER "x",
                      magic);
    if (!ok)
      break;
  }
  conn_die (c, &d);
  g_free (d.why);
  return NULL;
}

/* ---- sending ---- */

static int
conn_sendv_all (NbdConn *c, struct iovec *iov, int n)
{
  while (n > 0) {
    ssize_t r = c->t->ops->sendv (c->t, iov, n);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      return errno;
    }
    while (n > 0 && (size_t) r >= iov->iov_len) {
      r -= iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0) {
      iov->iov_base = (char *) iov->iov_base + r;
      iov->iov_len -= r;
    }
  }
  return 0;
}

/* With extended headers every request is 32 bytes; a WRITE "MUST use the
 * flag NBD_CMD_FLAG_PAYLOAD_LEN" (its length is the payload), every other
 * command we send has no payload, so length is its 64-bit effect length.
 * (Block status's payload form, NBD_FLAG_BLOCK_STATUS_PAYLOAD, only picks
 * among several contexts: we negotiate one.) */
static int
conn_send_extended (NbdConn *c, const NbdcCmd *cmd, uint64_t cookie)
{
  gboolean payload = cmd->type == NBD_CMD_WRITE;
  uint16_t flags = cmd->flags | (payload ? NBD_CMD_FLAG_PAYLOAD_LEN : 0);
  struct nbd_extended_request h = {
    .magic = GUINT32_TO_BE (NBD_EXTENDED_REQUEST_MAGIC),
    .flags = GUINT16_TO_BE (flags),
    .type = GUINT16_TO_BE (cmd->type),
    .cookie = GUINT64_TO_BE (cookie),
    .offset = GUINT64_TO_BE (cmd->offset),
    .length = GUINT64_TO_BE (cmd->count),
  };
  if (payload && cmd->in_pipe && cmd->count > 0)
    return conn_send_piped (c, &h, sizeof h, cmd);
  struct iovec iov[2] = { { &h, sizeof h }, { cmd->buf, cmd->count } };
  return conn_sendv_all (c, iov, payload && cmd->count > 0 ? 2 : 1);
}

static int
conn_send_request (NbdConn *c, const NbdcCmd *cmd, uint64_t cookie)
{
  if (c->extended)
    return conn_send_extended (c, cmd, cookie);
  struct nbd_request h = {
    .magic = GUINT32_TO_BE (NBD_REQUEST_MAGIC),
    .flags = GUINT16_TO_BE (cmd->flags),
    .type = GUINT16_TO_BE (cmd->type),
    .cookie = GUINT64_TO_BE (cookie),
    .offset = GUINT64_TO_BE (cmd->offset),
    .count = GUINT32_TO_BE (cmd->count),
  };
  if (cmd->type == NBD_CMD_WRITE && cmd->in_pipe && cmd->count > 0)
    return conn_send_piped (c, &h, sizeof h, cmd);
  struct iovec iov[2] = { { &h, sizeof h }, { cmd->buf, cmd->count } };
  int n = cmd->type == NBD_CMD_WRITE && cmd->count > 0 ? 2 : 1;
  return conn_sendv_all (c, iov, n);
}

/* Writes req (already in its slot, req->sending set) with send_lock
 * held by the caller and c->lock not held; releases send_lock. Then does
 * what the reader left for us (a reply that came while we were still
 * sending) and records a send failure for the reader. Returns with
 * c->lock not held. */
static void
conn_send_locked (NbdConn *c, NbdcReq *req, uint64_t cookie)
{
  if (c->debug)
    g_debug ("%s: cookie 0x%" G_GINT64_MODIFIER "x: sending %s flags 0x%x "
             "offset %" G_GUINT64_FORMAT " count %" G_GUINT64_FORMAT,
             c->name, cookie, nbdc_cmd_name (req->cmd.type), req->cmd.flags,
             req->cmd.offset, req->cmd.count);
  int err = conn_send_request (c, &req->cmd, cookie);
  g_mutex_unlock (&c->send_lock);

  g_mutex_lock (&c->lock);
  req->sending = FALSE;
  if (c->awaited == req) {
    c->awaited = NULL;
    g_cond_broadcast (&c->sent);
  }
  if (err && !c->broken) {
    c->broken = TRUE;
    c->broken_reason = g_strdup_printf ("sending %s: %s",
                                        nbdc_cmd_name (req->cmd.type),
                                        g_strerror (err));
  }
  gboolean finished = req->finished;
  int ferr = req->final_err;
  gboolean salv = req->final_salvage;
  g_mutex_unlock (&c->lock);
  if (finished)
    req_finish (c, req, ferr, salv);
  if (err)
    conn_shutdown_transport (c);
}

/* Puts req into a free slot (c->lock held, n_free > 0). Returns the
 * cookie. */
static uint64_t
conn_take_slot (NbdConn *c, NbdcReq *req)
{
  uint32_t slot = c->free_slots[--c->n_free];
  Slot *s = &c->slots[slot];
  s->gen++;
  s->req = req;
  req->slot = slot;
  req->sending = TRUE;
  /* Its age runs from now: a send that blocks (a server that stopped
   * reading) counts against --timeout like a reply that never comes. */
  req->sent_at = g_get_monotonic_time ();
  req->age_link.data = req;
  g_queue_push_tail_link (&c->aged, &req->age_link);
  if (c->in_flight++ == 0)
    c->last_progress = req->sent_at;
  return cookie_of (s, slot);
}

static gpointer
conn_sender (gpointer data)
{
  NbdConn *c = data;
  g_mutex_lock (&c->lock);
  for (;;) {
    while (!c->dead && !c->broken
           && (c->queue.length == 0 || c->n_free == 0)
           && !(c->stopping && c->queue.length == 0)) {
      c->sender_waiting = TRUE;
      g_cond_wait (&c->cond, &c->lock);
      c->sender_waiting = FALSE;
    }
    if (c->dead || c->broken || c->queue.length == 0)
      break;
    NbdcReq *req = g_queue_pop_head (&c->queue);
    uint64_t cookie = conn_take_slot (c, req);
    g_mutex_unlock (&c->lock);

    g_mutex_lock (&c->send_lock);
    conn_send_locked (c, req, cookie);
    g_mutex_lock (&c->lock);
  }
  gboolean disc = c->send_disc && !c->dead;
  g_mutex_unlock (&c->lock);
  if (disc) {
    NbdcCmd cmd = { .type = NBD_CMD_DISC };
    g_debug ("%s: server said ESHUTDOWN: sending disc", c->name);
    g_mutex_lock (&c->send_lock);
    conn_send_request (c, &cmd, 0);
    g_mutex_unlock (&c->send_lock);
    conn_shutdown_transport (c);
  }
  return NULL;
}

/* ---- public ---- */

NbdConn *
nbdc_conn_new (NbdTransport *t, const NbdExport *exp,
               const NbdcConnConfig *cfg)
{
  NbdConn *c = g_new0 (NbdConn, 1);
  c->t = t;
  c->name = g_strdup (cfg->name ? cfg->name : "connection");
  c->structured = exp->structured;
  c->extended = exp->extended;
  c->base_allocation = exp->base_allocation;
  c->base_allocation_id = exp->base_allocation_id;
  c->depth = cfg->max_in_flight ? cfg->max_in_flight : 64;
  c->timeout = cfg->request_timeout;
  c->salvage = cfg->salvage;
  c->dead_fn = cfg->dead;
  c->opaque = cfg->opaque;
  c->debug = !g_log_writer_default_would_drop (G_LOG_LEVEL_DEBUG,
                                                G_LOG_DOMAIN);
  g_mutex_init (&c->lock);
  g_mutex_init (&c->send_lock);
  c->rbuf = g_malloc (RBUF_SIZE);
  conn_scratch_open (c);
  g_cond_init (&c->cond);
  g_cond_init (&c->idle);
  g_cond_init (&c->sent);
  g_queue_init (&c->queue);
  g_queue_init (&c->aged);
  c->slots = g_new0 (Slot, c->depth);
  c->free_slots = g_new (uint32_t, c->depth);
  /* Hand out low slot numbers first (readable cookies in traces). */
  for (unsigned i = 0; i < c->depth; i++)
    c->free_slots[i] = c->depth - 1 - i;
  c->n_free = c->depth;
  c->last_progress = g_get_monotonic_time ();
  c->reader = g_thread_new ("nbd-reader", conn_reader, c);
  c->sender = g_thread_new ("nbd-sender", conn_sender, c);
  return c;
}

void
nbdc_conn_submit (NbdConn *c, const NbdcCmd *cmd)
{
  if (!c->extended && cmd->count > UINT32_MAX) {
    /* The pool only sends such lengths over extended headers; never
     * truncate one into a 32-bit field. */
    no_direct_send++;
    cmd->done (cmd->opaque, EINVAL);
    no_direct_send--;
    return;
  }
  NbdcReq *req = g_new0 (NbdcReq, 1);
  req->cmd = *cmd;
  g_mutex_lock (&c->lock);
  if (c->dead || c->broken || c->stopping) {
    gboolean salvage = !c->stopping && c->salvage != NULL;
    g_mutex_unlock (&c->lock);
    req_finish (c, req, EIO, salvage);
    return;
  }
  /* Send it ourselves if nothing is ahead of it and no one is writing
   * (try-lock: never wait for the socket with c->lock held). */
  if (!no_direct_send && c->queue.length == 0 && c->n_free > 0
      && g_mutex_trylock (&c->send_lock)) {
    uint64_t cookie = conn_take_slot (c, req);
    g_mutex_unlock (&c->lock);
    conn_send_locked (c, req, cookie);
    return;
  }
  g_queue_push_tail (&c->queue, req);
  if (c->sender_waiting)
    g_cond_signal (&c->cond);
  g_mutex_unlock (&c->lock);
}

size_t
nbdc_conn_pipe_max (NbdConn *c)
{
  return c->scratch_max;
}

gboolean
nbdc_conn_is_alive (NbdConn *c)
{
  g_mutex_lock (&c->lock);
  gboolean alive = !c->dead && !c->broken;
  g_mutex_unlock (&c->lock);
  return alive;
}

gboolean
nbdc_conn_saw_eshutdown (NbdConn *c)
{
  g_mutex_lock (&c->lock);
  gboolean r = c->eshutdown;
  g_mutex_unlock (&c->lock);
  return r;
}

unsigned
nbdc_conn_load (NbdConn *c)
{
  g_mutex_lock (&c->lock);
  unsigned n = c->in_flight + c->queue.length;
  g_mutex_unlock (&c->lock);
  return n;
}

void
nbdc_conn_drain (NbdConn *c)
{
  g_mutex_lock (&c->lock);
  while (!c->dead && (c->in_flight > 0 || c->queue.length > 0)) {
    c->idle_waiters++;
    g_cond_wait (&c->idle, &c->lock);
    c->idle_waiters--;
  }
  g_mutex_unlock (&c->lock);
}

void
nbdc_conn_kill (NbdConn *c, const char *reason)
{
  g_mutex_lock (&c->lock);
  if (!c->broken && !c->dead) {
    c->broken = TRUE;
    c->broken_reason = g_strdup (reason);
  }
  g_cond_broadcast (&c->cond);
  g_mutex_unlock (&c->lock);
  conn_shutdown_transport (c);
}

void
nbdc_conn_free (NbdConn *c)
{
  if (!c)
    return;
  nbdc_conn_drain (c);
  g_mutex_lock (&c->lock);
  c->stopping = TRUE;
  g_cond_broadcast (&c->cond);
  g_mutex_unlock (&c->lock);
  g_thread_join (c->sender);

  /* "The client sends NBD_CMD_DISC whereupon the server MUST ... close
   * the TCP connection." We shut our side down right after, so a server
   * that ignores DISC cannot keep the reader (and us) waiting. */
  g_mutex_lock (&c->lock);
  gboolean alive = !c->dead && !c->broken;
  g_mutex_unlock (&c->lock);
  if (alive) {
    NbdcCmd disc = { .type = NBD_CMD_DISC };
    if (c->debug)
      g_debug ("%s: sending disc", c->name);
    g_mutex_lock (&c->send_lock);
    conn_send_request (c, &disc, 0);
    g_mutex_unlock (&c->send_lock);
  }
  conn_shutdown_transport (c);
  g_thread_join (c->reader);

  nbdc_transport_free (c->t);
  conn_scratch_close (c);
  g_mutex_clear (&c->lock);
  g_mutex_clear (&c->send_lock);
  g_cond_clear (&c->cond);
  g_cond_clear (&c->idle);
  g_cond_clear (&c->sent);
  g_free (c->overdue);
  g_free (c->rbuf);
  g_free (c->slots);
  g_free (c->free_slots);
  g_free (c->broken_reason);
  g_free (c->name);
  g_free (c);
}
