/* nbdfs — a TLS session as a NbdTransport (after the handshake in
 * tls-handshake.c; tls-internal.h says which file does what).
 *
 * Threads: one thread receives while another sends (transport.h). The
 * gnutls manual allows that, but with TLS 1.3 it is not safe in gnutls
 * 3.7: a KeyUpdate processed by gnutls_record_recv re-creates the record
 * epochs (lib/tls13/key_update.c update_keys) while the sender's own key
 * update does the same, and the reader ends up with the old read key
 * ("Decryption has failed"; test/unit/test-tls.c two-threads-key-update
 * catches it). So every gnutls call after the handshake holds one session
 * lock, a fair one (a sender looping on writes must not starve the
 * receiver).
 *
 * The session lock is never held across a wait: after the handshake
 * gnutls never touches the socket. It pulls ciphertext from rx, which
 * the receiver fills from the socket, and pushes into tx, which whoever
 * sends or receives writes to the socket without blocking. Both buffers
 * are bounded: the receiver stops reading the socket while rx is full
 * (TCP flow control then holds the server back), and a sender hands
 * gnutls only as much as tx has room for, waiting for room (without the
 * lock) at most SEND_WAIT_MS per call. So whatever a server sends, or
 * does not send or read, our memory stays bounded and every call returns
 * within a bounded time, and the caller's deadline (the request timeout,
 * the handshake deadline) decides. Because the push never fails for
 * want of room, gnutls never returns half-done, so its
 * resume-after-EAGAIN path never meets a KeyUpdate processed in between;
 * a send whose records are still in tx after SEND_WAIT_MS returns EAGAIN
 * itself and the next call finishes them (send_drain, transport.h).
 * TLS 1.2 renegotiation is refused (a HelloRequest is ignored, RFC 5246
 * 7.4.1.1); GNUTLS_AUTO_REAUTH and post-handshake authentication are
 * never enabled.
 *
 * I/O goes through our own push/pull functions: MSG_NOSIGNAL (a dead
 * server must not kill us with SIGPIPE) and MSG_DONTWAIT always, so the
 * handshake is bounded by a deadline with poll() without touching the
 * fd's flags.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>
#include <gnutls/gnutls.h>

#include "nbdclient/tls-internal.h"

/* sendv hands gnutls at most this much per call while corked, so header and
 * payload share records without copying a whole 32 MiB write at once. */
#define SENDV_CHUNK (256 * 1024)
/* A record carries at most 2^14 bytes of data (RFC 8446 5.1, RFC 5246
 * 6.2.1); what encryption adds to it (header, explicit IV, MAC or tag,
 * CBC padding) stays well below this. */
#define RECORD_DATA 16384
#define RECORD_OVERHEAD 512
/* The ciphertext buffers (nbdc_tls_buffer_max in tls.h is their sum).
 * rx holds several whole records (one is at most 5 + 2^14 + 2048 bytes,
 * RFC 5246 6.2.3), so a full rx always lets gnutls make progress. tx
 * holds a sendv chunk plus TX_RESERVE that senders leave free for what
 * gnutls sends on its own while receiving (KeyUpdate answers, alerts). */
#define RX_CAP (256 * 1024)
#define TX_RESERVE (32 * 1024)
#define TX_CAP (SENDV_CHUNK + SENDV_CHUNK / 8 + TX_RESERVE)
G_STATIC_ASSERT (RX_CAP + TX_CAP == NBDC_TLS_BUFFER_MAX);

/* recv and send return EAGAIN after this long without progress: a record
 * that never completes (half a record, then silence: anyone on the path
 * can send that), a server that keeps sending records without data, or
 * one that reads nothing must not outlast the caller's handshake
 * deadline or request timeout. */
#define RECV_WAIT_MS 200
#define SEND_WAIT_MS 200

/* ---- the session lock: fair (first come, first served) ---- */

/* A ticket lock: a sender looping on sendv must not starve the receiver
 * (glib's mutex lets the unlocking thread take it straight back). */
static void
session_lock (TlsPriv *p)
{
  pthread_mutex_lock (&p->lock);
  guint64 mine = p->next_ticket++;
  while (p->now_serving != mine)
    pthread_cond_wait (&p->turn, &p->lock);
  pthread_mutex_unlock (&p->lock);
}

static gboolean
session_trylock (TlsPriv *p)
{
  gboolean got = FALSE;
  pthread_mutex_lock (&p->lock);
  if (p->now_serving == p->next_ticket) {
    p->next_ticket++;
    got = TRUE;
  }
  pthread_mutex_unlock (&p->lock);
  return got;
}

static void
session_unlock (TlsPriv *p)
{
  pthread_mutex_lock (&p->lock);
  p->now_serving++;
  pthread_cond_broadcast (&p->turn);
  pthread_mutex_unlock (&p->lock);
}

/* ---- ciphertext from the socket (rx) ---- */

/* Reads what the socket has (without blocking) into rx, as far as rx
 * has room. Only the receiving thread calls it. */
static void
rx_fill (TlsPriv *p)
{
  pthread_mutex_lock (&p->rx_lock);
  if (!p->rx_eof && !p->rx_errno) {
    if (p->rx_start == p->rx_end)
      p->rx_start = p->rx_end = 0;
    else if (p->rx_start > 0 && RX_CAP - p->rx_end < RX_CAP / 2) {
      memmove (p->rx, p->rx + p->rx_start, p->rx_end - p->rx_start);
      p->rx_end -= p->rx_start;
      p->rx_start = 0;
    }
    if (p->rx_end < RX_CAP) {
      ssize_t r;
      do
        r = recv (p->fd, p->rx + p->rx_end, RX_CAP - p->rx_end,
                  MSG_DONTWAIT);
      while (r < 0 && errno == EINTR);
      if (r > 0)
        p->rx_end += r;
      else if (r == 0)
        p->rx_eof = TRUE;
      else if (errno != EAGAIN && errno != EWOULDBLOCK)
        p->rx_errno = errno;
      p->rx_high = MAX (p->rx_high, p->rx_end - p->rx_start);
    }
  }
  pthread_mutex_unlock (&p->rx_lock);
}

/* Bytes in rx; *ended: the socket has nothing more to give; *room: rx
 * can take more from the socket. */
static size_t
rx_available (TlsPriv *p, gboolean *ended, gboolean *room)
{
  pthread_mutex_lock (&p->rx_lock);
  size_t n = p->rx_end - p->rx_start;
  gboolean end = p->rx_eof || p->rx_errno;
  if (ended)
    *ended = end;
  if (room)
    *room = !end && n < RX_CAP;
  pthread_mutex_unlock (&p->rx_lock);
  return n;
}

/* TRUE if rx holds at least one whole TLS record (5-byte header: type,
 * version, 16-bit length; RFC 8446 5.1), i.e. recv will not wait. */
static gboolean
rx_has_record (TlsPriv *p)
{
  gboolean r = FALSE;
  pthread_mutex_lock (&p->rx_lock);
  size_t have = p->rx_end - p->rx_start;
  if (have >= 5) {
    const guint8 *h = (const guint8 *) p->rx + p->rx_start;
    r = have >= 5 + (((size_t) h[3] << 8) | h[4]);
  }
  r = r || p->rx_eof || p->rx_errno;
  pthread_mutex_unlock (&p->rx_lock);
  return r;
}

/* ---- ciphertext for the socket (tx) ---- */

/* Writes what tx holds, as far as the socket takes it without blocking.
 * 0 (possibly with bytes left), or the socket's errno. */
static int
tx_flush (TlsPriv *p)
{
  pthread_mutex_lock (&p->tx_lock);
  while (p->tx_start < p->tx_end && !p->tx_errno) {
    ssize_t r = send (p->fd, p->tx + p->tx_start, p->tx_end - p->tx_start,
                      MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r > 0)
      p->tx_start += r;
    else if (r < 0 && errno == EINTR)
      continue;
    else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    else
      p->tx_errno = r < 0 ? errno : EPIPE;
  }
  if (p->tx_start == p->tx_end)
    p->tx_start = p->tx_end = 0;
  int err = p->tx_errno;
  pthread_mutex_unlock (&p->tx_lock);
  return err;
}

static size_t
tx_queued (TlsPriv *p)
{
  pthread_mutex_lock (&p->tx_lock);
  size_t n = p->tx_end - p->tx_start;
  pthread_mutex_unlock (&p->tx_lock);
  return n;
}

/* How much data gnutls may be given now so that its records fit in tx
 * without the reserve; 0 = wait for the socket. At most want. */
static size_t
tx_budget (TlsPriv *p, size_t want)
{
  size_t queued = tx_queued (p);
  size_t room = queued < TX_CAP - TX_RESERVE ? TX_CAP - TX_RESERVE - queued
    : 0;
  size_t budget = room / (RECORD_DATA + RECORD_OVERHEAD) * RECORD_DATA;
  if (budget < want && room >= want + RECORD_OVERHEAD)
    budget = want;     /* small: one record */
  return MIN (budget, want);
}

/* ---- transport functions for gnutls ---- */

/* Handshake: straight from the socket, never blocking (the caller polls
 * with the deadline). Afterwards: from rx (EAGAIN when it is empty: the
 * receiver then waits for the socket). */
static ssize_t
tls_pull (gnutls_transport_ptr_t ptr, void *buf, size_t len)
{
  TlsPriv *p = ptr;
  ssize_t r;

  if (!p->established) {
    do
      r = recv (p->fd, buf, len, MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0)
      gnutls_transport_set_errno (p->session, errno);
    return r;
  }
  pthread_mutex_lock (&p->rx_lock);
  size_t have = p->rx_end - p->rx_start;
  if (have > 0) {
    r = MIN (len, have);
    memcpy (buf, p->rx + p->rx_start, r);
    p->rx_start += r;
  }
  else if (p->rx_eof)
    r = 0;
  else {
    int e = p->rx_errno ? p->rx_errno : EAGAIN;
    gnutls_transport_set_errno (p->session, e);
    errno = e;
    r = -1;
  }
  pthread_mutex_unlock (&p->rx_lock);
  return r;
}

static int
tls_pull_timeout (gnutls_transport_ptr_t ptr, unsigned ms)
{
  TlsPriv *p = ptr;
  struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
  int r;

  if (p->established) {
    gboolean ended;
    return rx_available (p, &ended, NULL) > 0 || ended;
  }
  do
    r = poll (&pfd, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int) ms);
  while (r < 0 && errno == EINTR);
  return r;
}

static ssize_t
push_fail (TlsPriv *p, int e)
{
  p->push_errno = e;
  gnutls_transport_set_errno (p->session, e);
  errno = e;
  return -1;
}

/* Called with the session lock held. During the handshake: straight to
 * the socket, never blocking (EAGAIN: the handshake loop polls).
 * Afterwards: never blocking and never EAGAIN. Straight to the socket
 * while nothing is queued (no copy in the common case), the rest into tx
 * (the sender made sure there is room; gnutls's own messages use the
 * reserve). A tx that cannot take it means a server that reads nothing
 * while making us answer: the connection fails. */
static ssize_t
tls_vec_push (gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt)
{
  TlsPriv *p = ptr;
  struct msghdr msg = { .msg_iov = (struct iovec *) iov,
                        .msg_iovlen = iovcnt };
  ssize_t r;

  if (!p->established) {
    do
      r = sendmsg (p->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0)
      return push_fail (p, errno);
    return r;
  }

  size_t total = 0;
  for (int i = 0; i < iovcnt; i++)
    total += iov[i].iov_len;
  pthread_mutex_lock (&p->tx_lock);
  if (p->tx_errno) {
    int e = p->tx_errno;
    pthread_mutex_unlock (&p->tx_lock);
    return push_fail (p, e);
  }
  size_t sent = 0;
  if (p->tx_start == p->tx_end) {
    do
      r = sendmsg (p->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      int e = p->tx_errno = errno;
      pthread_mutex_unlock (&p->tx_lock);
      return push_fail (p, e);
    }
    sent = r > 0 ? (size_t) r : 0;
  }
  if (sent < total) {
    if (p->tx_start > 0 && TX_CAP - p->tx_end < total - sent) {
      memmove (p->tx, p->tx + p->tx_start, p->tx_end - p->tx_start);
      p->tx_end -= p->tx_start;
      p->tx_start = 0;
    }
    if (TX_CAP - p->tx_end < total - sent) {
      pthread_mutex_unlock (&p->tx_lock);
      g_debug ("TLS: the server reads nothing and %zu bytes wait for it; "
               "giving up", p->tx_end - p->tx_start + total - sent);
      return push_fail (p, ENOBUFS);
    }
    size_t skip = sent;
    for (int i = 0; i < iovcnt; i++) {
      size_t n = iov[i].iov_len;
      if (skip >= n) {
        skip -= n;
        continue;
      }
      memcpy (p->tx + p->tx_end, (char *) iov[i].iov_base + skip, n - skip);
      p->tx_end += n - skip;
      skip = 0;
    }
    p->tx_high = MAX (p->tx_high, p->tx_end - p->tx_start);
  }
  pthread_mutex_unlock (&p->tx_lock);
  return total;
}

/* ---- NbdTransport ops ---- */

static gint64
ms_since (gint64 start)
{
  return (g_get_monotonic_time () - start) / 1000;
}

/* The receiving thread: it decrypts under the session lock, and waits
 * for the socket (or shutdown) without it, RECV_WAIT_MS per call at
 * most. In event-loop mode it never waits: EAGAIN. */
static ssize_t
tls_recv (NbdTransport *t, void *buf, size_t len)
{
  TlsPriv *p = t->priv;

  if (p->stash_off < p->stash_len) {
    size_t n = MIN (len, p->stash_len - p->stash_off);
    memcpy (buf, p->stash + p->stash_off, n);
    p->stash_off += n;
    return n;
  }
  /* RECV_WAIT_MS bounds the whole call, not each wait: records without
   * data (session tickets, say) every few ms, or a flood of them, must
   * not keep us here. In event-loop mode one socket read per call: one
   * connection's flood must not starve the others. */
  gint64 start = g_get_monotonic_time ();
  gboolean filled = FALSE;
  for (;;) {
    if (!p->single_thread || !filled) {
      rx_fill (p);
      filled = TRUE;
    }
    session_lock (p);
    ssize_t r = gnutls_record_recv (p->session, buf, len);
    session_unlock (p);
    if (tx_queued (p) > 0)
      (void) tx_flush (p);      /* a KeyUpdate answer, say */
    if (r >= 0)
      return r;
    switch (r) {
    case GNUTLS_E_AGAIN:
    case GNUTLS_E_INTERRUPTED:
      break;
    case GNUTLS_E_REHANDSHAKE:
      /* Renegotiation cannot share the session with a sending thread; a
       * client may ignore the request (RFC 5246 7.4.1.1). */
      g_debug ("TLS: ignoring the server's renegotiation request");
      break;
    case GNUTLS_E_PREMATURE_TERMINATION:
      /* Closed without close_notify: NBD framing catches truncation. */
      g_debug ("TLS: server closed the connection without close_notify");
      return 0;
    default:
      if (!gnutls_error_is_fatal ((int) r)) {
        g_debug ("TLS receive: %s (continuing)", gnutls_strerror ((int) r));
        break;
      }
      g_debug ("TLS receive failed: %s", gnutls_strerror ((int) r));
      errno = g_atomic_int_get (&p->shut) ? ECONNRESET
        : p->rx_errno ? p->rx_errno : EIO;
      return -1;
    }

    if (g_atomic_int_get (&p->shut)) {
      errno = ECONNRESET;
      return -1;
    }
    gint64 waited = ms_since (start);
    /* gnutls also says AGAIN after a post-handshake message (KeyUpdate,
     * NewSessionTicket) with more records in rx; it only ran dry if rx
     * is empty. */
    gboolean ended, room;
    size_t have = rx_available (p, &ended, &room);
    if ((have > 0 || ended) && waited < RECV_WAIT_MS)
      continue;
    if (p->single_thread || waited >= RECV_WAIT_MS) {
      errno = EAGAIN;
      return -1;
    }
    struct pollfd pfd[2] = {
      { .fd = p->wake_fd, .events = POLLIN },
      { .fd = p->fd, .events = (room ? POLLIN : 0)
                               | (tx_queued (p) > 0 ? POLLOUT : 0) },
    };
    int n = poll (pfd, 2, (int) (RECV_WAIT_MS - waited));
    if (n < 0 && errno != EINTR) {
      errno = EIO;
      return -1;
    }
    if (n == 0) {
      /* Nothing for a while: let the caller check its deadline (it
       * polls the socket, or finds tls_pending true, and calls again). */
      errno = EAGAIN;
      return -1;
    }
    if (n > 0 && (pfd[0].revents & POLLIN)) {
      guint64 v;
      (void) !read (p->wake_fd, &v, sizeof v);
    }
    if (n > 0 && (pfd[1].revents & POLLOUT))
      (void) tx_flush (p);
  }
}

/* Maps a fatal gnutls send error to errno (the push function saved the
 * socket's errno for GNUTLS_E_PUSH_ERROR). */
static ssize_t
send_error (TlsPriv *p, ssize_t r)
{
  g_debug ("TLS send failed: %s", gnutls_strerror ((int) r));
  if (r == GNUTLS_E_PUSH_ERROR && p->push_errno != 0)
    errno = p->push_errno;
  else
    errno = g_atomic_int_get (&p->shut) ? EPIPE : EIO;
  return -1;
}

/* Waits, without the session lock, until tx has room for some of the
 * len bytes the caller wants to send: returns how many it may hand
 * gnutls, or -1 with errno (EAGAIN after SEND_WAIT_MS, or at once in
 * event-loop mode; EPIPE after shutdown; the socket's error). */
static ssize_t
send_wait (TlsPriv *p, size_t len)
{
  gint64 start = g_get_monotonic_time ();
  for (;;) {
    if (g_atomic_int_get (&p->shut)) {
      errno = EPIPE;
      return -1;
    }
    int err = tx_flush (p);
    if (err) {
      errno = err;
      return -1;
    }
    size_t budget = tx_budget (p, len);
    if (budget > 0)
      return budget;
    gint64 waited = ms_since (start);
    if (p->single_thread || waited >= SEND_WAIT_MS) {
      errno = EAGAIN;
      return -1;
    }
    struct pollfd pfd = { .fd = p->fd, .events = POLLOUT };
    if (poll (&pfd, 1, (int) (SEND_WAIT_MS - waited)) < 0
        && errno != EINTR) {
      errno = EIO;
      return -1;
    }
  }
}

/* After gnutls took len bytes: waits (without the session lock) until
 * their records left tx, SEND_WAIT_MS at most (event-loop mode: not at
 * all). Returns len; or -1 with EAGAIN, remembering len in p->owed (the
 * caller calls again with the same bytes, like after a partial write);
 * or -1 with the socket's error, EPIPE after shutdown. So a send that
 * succeeds leaves nothing behind in tx that only a later send would
 * write. */
static ssize_t
send_drain (TlsPriv *p, size_t len)
{
  gint64 start = g_get_monotonic_time ();
  for (;;) {
    int err = tx_flush (p);
    if (err) {
      errno = err;
      return -1;
    }
    if (tx_queued (p) == 0)
      return len;
    if (g_atomic_int_get (&p->shut)) {
      errno = EPIPE;
      return -1;
    }
    gint64 waited = ms_since (start);
    if (p->single_thread || waited >= SEND_WAIT_MS) {
      p->owed = len;
      errno = EAGAIN;
      return -1;
    }
    struct pollfd pfd = { .fd = p->fd, .events = POLLOUT };
    if (poll (&pfd, 1, (int) (SEND_WAIT_MS - waited)) < 0
        && errno != EINTR) {
      errno = EIO;
      return -1;
    }
  }
}

/* A send after EAGAIN: finish the previous one first. */
static ssize_t
send_owed (TlsPriv *p)
{
  size_t owed = p->owed;
  p->owed = 0;
  return send_drain (p, owed);
}

/* gnutls sends one record per call at most (uncorked). */
static ssize_t
tls_send (NbdTransport *t, const void *buf, size_t len)
{
  TlsPriv *p = t->priv;
  if (p->owed)
    return send_owed (p);
  ssize_t budget = send_wait (p, MIN (len, RECORD_DATA));
  if (budget < 0)
    return -1;
  session_lock (p);
  ssize_t r = gnutls_record_send (p->session, buf, budget);
  session_unlock (p);
  if (r < 0)
    return send_error (p, r);
  return send_drain (p, r);
}

/* Corks the iovecs (up to SENDV_CHUNK bytes, as far as tx has room) so a
 * request header and its payload leave in the same TLS records: one NBD
 * request, one write. */
static ssize_t
tls_sendv (NbdTransport *t, const struct iovec *iov, int iovcnt)
{
  TlsPriv *p = t->priv;
  if (p->owed)
    return send_owed (p);
  size_t want = 0;
  for (int i = 0; i < iovcnt && want < SENDV_CHUNK; i++)
    want += iov[i].iov_len;
  ssize_t budget = send_wait (p, MIN (want, SENDV_CHUNK));
  if (budget < 0)
    return -1;

  size_t total = 0;
  ssize_t r = 0;
  session_lock (p);
  gnutls_record_cork (p->session);
  for (int i = 0; i < iovcnt && total < (size_t) budget; i++) {
    size_t n = MIN (iov[i].iov_len, (size_t) budget - total);
    if (n == 0)
      continue;
    r = gnutls_record_send (p->session, iov[i].iov_base, n);
    if (r < 0)
      break;
    total += r;
  }
  if (r >= 0)
    r = gnutls_record_uncork (p->session, GNUTLS_RECORD_WAIT);
  else
    (void) gnutls_record_uncork (p->session, 0);
  session_unlock (p);
  if (r < 0)
    return send_error (p, r);
  return send_drain (p, total);
}

/* TRUE if recv will not have to wait for the socket, or has bytes to
 * write (what gnutls answered to a KeyUpdate while receiving, when the
 * socket was full: recv waits for POLLOUT too). Called by the receiving
 * thread (transport.c's wait_ready), which alone decrypts, so gnutls's
 * own buffer can be read without the session lock. */
static gboolean
tls_pending (NbdTransport *t)
{
  TlsPriv *p = t->priv;
  return p->stash_off < p->stash_len
    || (!p->single_thread && tx_queued (p) > 0)
    || gnutls_record_check_pending (p->session) > 0
    || rx_has_record (p);
}

/* Best effort close_notify (only if no gnutls call is in progress;
 * gnutls lets the sending side call gnutls_bye (GNUTLS_SHUT_WR)), then
 * the socket shutdown that wakes a receiver (and the wake_fd) and a
 * sender in poll. */
static void
tls_shutdown (NbdTransport *t)
{
  TlsPriv *p = t->priv;

  if (!g_atomic_int_compare_and_exchange (&p->shut, 0, 1))
    return;
  if (session_trylock (p)) {
    (void) gnutls_bye (p->session, GNUTLS_SHUT_WR);
    session_unlock (p);
    (void) tx_flush (p);
  }
  if (t->fd >= 0)
    shutdown (t->fd, SHUT_RDWR);
  guint64 one = 1;
  (void) !write (p->wake_fd, &one, sizeof one);
}

TlsPriv *
tls_priv_new (int fd, GError **error)
{
  TlsPriv *p = g_new0 (TlsPriv, 1);

  pthread_mutex_init (&p->lock, NULL);
  pthread_mutex_init (&p->rx_lock, NULL);
  pthread_mutex_init (&p->tx_lock, NULL);
  pthread_cond_init (&p->turn, NULL);
  p->fd = fd;
  p->wake_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (p->wake_fd < 0) {
    int e = errno;
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e),
                 "TLS setup: eventfd: %s", g_strerror (e));
    tls_priv_free (p);
    return NULL;
  }
  return p;
}

void
tls_priv_bind (TlsPriv *p)
{
  gnutls_transport_set_ptr (p->session, p);
  gnutls_transport_set_pull_function (p->session, tls_pull);
  gnutls_transport_set_pull_timeout_function (p->session, tls_pull_timeout);
  gnutls_transport_set_vec_push_function (p->session, tls_vec_push);
}

void
tls_priv_free (TlsPriv *p)
{
  if (p == NULL)
    return;
  if (p->session)
    gnutls_deinit (p->session);
  if (p->x509)
    gnutls_certificate_free_credentials (p->x509);
  if (p->psk)
    gnutls_psk_free_client_credentials (p->psk);
  if (p->anon)
    gnutls_anon_free_client_credentials (p->anon);
  if (p->wake_fd >= 0)
    close (p->wake_fd);
  g_free (p->rx);
  g_free (p->tx);
  pthread_mutex_destroy (&p->lock);
  pthread_mutex_destroy (&p->rx_lock);
  pthread_mutex_destroy (&p->tx_lock);
  pthread_cond_destroy (&p->turn);
  g_free (p);
}

static void
tls_free_priv (NbdTransport *t)
{
  g_clear_pointer ((TlsPriv **) &t->priv, tls_priv_free);
}

static const NbdTransportOps tls_ops;

void
nbdc_tls_set_single_thread (NbdTransport *t)
{
  g_return_if_fail (t != NULL && t->ops == &tls_ops);
  TlsPriv *p = t->priv;
  p->single_thread = TRUE;
}

short
nbdc_tls_poll_events (NbdTransport *t)
{
  g_return_val_if_fail (t != NULL && t->ops == &tls_ops, 0);
  TlsPriv *p = t->priv;
  gboolean room;
  (void) rx_available (p, NULL, &room);
  return (room ? POLLIN : 0) | (tx_queued (p) > 0 ? POLLOUT : 0);
}

int
nbdc_tls_flush (NbdTransport *t)
{
  g_return_val_if_fail (t != NULL && t->ops == &tls_ops, EINVAL);
  return tx_flush (t->priv);
}

size_t
nbdc_tls_buffered_high_water (NbdTransport *t)
{
  g_return_val_if_fail (t != NULL && t->ops == &tls_ops, 0);
  TlsPriv *p = t->priv;
  pthread_mutex_lock (&p->rx_lock);
  size_t rx = p->rx_high;
  pthread_mutex_unlock (&p->rx_lock);
  pthread_mutex_lock (&p->tx_lock);
  size_t tx = p->tx_high;
  pthread_mutex_unlock (&p->tx_lock);
  return rx + tx;
}

static const NbdTransportOps tls_ops = {
  .recv = tls_recv,
  .send = tls_send,
  .sendv = tls_sendv,
  .pending = tls_pending,
  .shutdown = tls_shutdown,
  .free_priv = tls_free_priv,
  .name = "tls",
};

NbdTransport *
tls_priv_establish (TlsPriv *p)
{
  p->rx = g_malloc (RX_CAP);
  p->tx = g_malloc (TX_CAP);
  p->established = TRUE;

  NbdTransport *t = g_new0 (NbdTransport, 1);
  t->ops = &tls_ops;
  t->fd = p->fd;
  t->priv = p;
  return t;
}
