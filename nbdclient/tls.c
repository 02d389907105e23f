/* nbdfs — TLS with gnutls after NBD_OPT_STARTTLS (nbd-proto.md "TLS
 * support"): X.509 (verified by default) or PSK, as a NbdTransport.
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
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <gio/gio.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "nbdclient/error.h"
#include "nbdclient/tls.h"

/* TLS 1.2 and 1.3 only ("Security considerations: TLS versions": MUST 1.2,
 * SHOULD later, older SHOULD NOT be on by default). */
#define PRIORITY_BASE "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
#define PRIORITY_PSK  PRIORITY_BASE ":+ECDHE-PSK:+DHE-PSK:+PSK"
#define PRIORITY_ANON PRIORITY_BASE ":+ANON-ECDH:+ANON-DH"

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

typedef enum { AUTH_X509, AUTH_PSK, AUTH_ANON } AuthKind;

typedef struct {
  gnutls_session_t session;
  AuthKind kind;
  gnutls_certificate_credentials_t x509;
  gnutls_psk_client_credentials_t psk;
  gnutls_anon_client_credentials_t anon;
  int fd;
  gboolean have_client_cert;
  gboolean established;           /* handshake done: rx/tx in use */
  gboolean single_thread;         /* event-loop mode (relay): see tls.h */
  /* Every gnutls call after the handshake holds the session lock, a fair
   * ticket lock (lock/turn/next_ticket/now_serving). */
  pthread_mutex_t lock;
  pthread_cond_t turn;
  guint64 next_ticket, now_serving;
  int wake_fd;                    /* eventfd: shutdown wakes the receiver */
  int shut;                       /* atomic: set once by shutdown */
  int push_errno;                 /* last push error (session lock) */
  /* Ciphertext from the socket, waiting for gnutls (rx_lock): filled by
   * the receiver, RX_CAP bytes at most. */
  pthread_mutex_t rx_lock;
  char *rx;
  size_t rx_start, rx_end, rx_high;
  gboolean rx_eof;
  int rx_errno;
  /* Ciphertext from gnutls, waiting for the socket (tx_lock): TX_CAP
   * bytes at most. Lock order: session lock, then tx_lock. */
  pthread_mutex_t tx_lock;
  char *tx;
  size_t tx_start, tx_end, tx_high;
  int tx_errno;
  /* Data gnutls took from the last send whose records were still in tx
   * when that send returned EAGAIN: the next send (with the same bytes)
   * returns this count once tx is empty. Only the sending thread. */
  size_t owed;
  char stash[256];                /* application data read early */
  size_t stash_len, stash_off;
} TlsPriv;

/* ---- configuration ---- */

void
nbdc_tls_config_clear (NbdcTlsConfig *cfg)
{
  g_clear_pointer (&cfg->certificates, g_free);
  g_clear_pointer (&cfg->psk_file, g_free);
  g_clear_pointer (&cfg->username, g_free);
  g_clear_pointer (&cfg->hostname, g_free);
  g_clear_pointer (&cfg->type, g_free);
}

void
nbdc_tls_config_copy (NbdcTlsConfig *dst, const NbdcTlsConfig *src)
{
  dst->certificates = g_strdup (src->certificates);
  dst->psk_file = g_strdup (src->psk_file);
  dst->username = g_strdup (src->username);
  dst->hostname = g_strdup (src->hostname);
  dst->type = g_strdup (src->type);
  dst->no_verify = src->no_verify;
}

/* The command line wins over the URI: an explicit --tls-* option is the
 * user's latest word (libnbd and qemu have no such conflict; we pick the
 * obvious rule). */
gboolean
nbdc_tls_config_merge_uri (NbdcTlsConfig *cfg, const NbdAddress *addr,
                           GError **error)
{
  if (addr->tls_type) {
    if (strcmp (addr->tls_type, "x509") != 0
        && strcmp (addr->tls_type, "psk") != 0
        && strcmp (addr->tls_type, "anon") != 0) {
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                   "tls-type=%s: expected x509, psk or anon",
                   addr->tls_type);
      return FALSE;
    }
    if (cfg->type == NULL)
      cfg->type = g_strdup (addr->tls_type);
  }
  if (cfg->certificates == NULL)
    cfg->certificates = g_strdup (addr->tls_certificates);
  if (cfg->psk_file == NULL)
    cfg->psk_file = g_strdup (addr->tls_psk_file);
  if (cfg->username == NULL)
    cfg->username = g_strdup (addr->tls_username);
  if (cfg->hostname == NULL)
    cfg->hostname = g_strdup (addr->tls_hostname);
  if (addr->tls_verify_peer == 0)
    cfg->no_verify = TRUE;

  if (cfg->type && strcmp (cfg->type, "psk") == 0 && cfg->psk_file == NULL) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "tls-type=psk needs a key file: --tls-psk-file FILE or "
                 "tls-psk-file=FILE in the URI");
    return FALSE;
  }
  if (cfg->psk_file && cfg->certificates) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "give either a PSK file or a certificates directory, "
                 "not both");
    return FALSE;
  }
  return TRUE;
}

/* tls-type wins when given; else a PSK file means PSK. */
static AuthKind
config_kind (const NbdcTlsConfig *cfg)
{
  if (cfg->type && strcmp (cfg->type, "anon") == 0)
    return AUTH_ANON;
  if (cfg->type && strcmp (cfg->type, "psk") == 0)
    return AUTH_PSK;
  if (cfg->type && strcmp (cfg->type, "x509") == 0)
    return AUTH_X509;
  return cfg->psk_file ? AUTH_PSK : AUTH_X509;
}

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

static void
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

/* ---- credentials ---- */

static gboolean
tls_error (GError **error, const char *fmt, ...) G_GNUC_PRINTF (2, 3);

static gboolean
tls_error (GError **error, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error_literal (error, NBDFS_ERROR, NBDFS_ERROR_TLS, msg);
  return FALSE;
}

static gboolean
setup_x509 (TlsPriv *p, const NbdcTlsConfig *cfg, GError **error)
{
  int r = gnutls_certificate_allocate_credentials (&p->x509);
  if (r < 0)
    return tls_error (error, "TLS setup failed: %s", gnutls_strerror (r));

  if (cfg->certificates) {
    g_autofree char *ca = g_build_filename (cfg->certificates,
                                            "ca-cert.pem", NULL);
    g_autofree char *crl = g_build_filename (cfg->certificates,
                                             "ca-crl.pem", NULL);
    g_autofree char *cert = g_build_filename (cfg->certificates,
                                              "client-cert.pem", NULL);
    g_autofree char *key = g_build_filename (cfg->certificates,
                                             "client-key.pem", NULL);
    if (!g_file_test (cfg->certificates, G_FILE_TEST_IS_DIR))
      return tls_error (error, "--tls-certificates %s: not a directory "
                        "(it should hold ca-cert.pem, and client-cert.pem "
                        "with client-key.pem for client authentication)",
                        cfg->certificates);
    if (g_file_test (ca, G_FILE_TEST_EXISTS)) {
      r = gnutls_certificate_set_x509_trust_file (p->x509, ca,
                                                  GNUTLS_X509_FMT_PEM);
      if (r <= 0)
        return tls_error (error, "%s: %s", ca,
                          r == 0 ? "no certificate in the file"
                          : gnutls_strerror (r));
    }
    else if (!cfg->no_verify)
      return tls_error (error, "%s is missing: it must hold the CA "
                        "certificate that signed the server's (see "
                        "scripts/make-pki.sh)", ca);
    if (g_file_test (crl, G_FILE_TEST_EXISTS)) {
      r = gnutls_certificate_set_x509_crl_file (p->x509, crl,
                                                GNUTLS_X509_FMT_PEM);
      if (r < 0)
        return tls_error (error, "%s: %s", crl, gnutls_strerror (r));
    }
    gboolean have_cert = g_file_test (cert, G_FILE_TEST_EXISTS);
    gboolean have_key = g_file_test (key, G_FILE_TEST_EXISTS);
    if (have_cert != have_key)
      return tls_error (error, "%s without %s: a client certificate needs "
                        "both files", have_cert ? cert : key,
                        have_cert ? "client-key.pem" : "client-cert.pem");
    if (have_cert) {
      r = gnutls_certificate_set_x509_key_file (p->x509, cert, key,
                                                GNUTLS_X509_FMT_PEM);
      if (r < 0)
        return tls_error (error, "cannot load %s with %s: %s", cert, key,
                          gnutls_strerror (r));
      p->have_client_cert = TRUE;
    }
  }
  else if (!cfg->no_verify) {
    r = gnutls_certificate_set_x509_system_trust (p->x509);
    if (r < 0)
      return tls_error (error, "cannot load the system's trusted CAs: %s "
                        "(give --tls-certificates DIR with ca-cert.pem)",
                        gnutls_strerror (r));
    g_debug ("TLS: %d CA certificates from the system trust store", r);
  }
  r = gnutls_credentials_set (p->session, GNUTLS_CRD_CERTIFICATE, p->x509);
  if (r < 0)
    return tls_error (error, "TLS setup failed: %s", gnutls_strerror (r));
  return TRUE;
}

void (*nbdc_tls_wipe_observer) (const void *buf, size_t len);

/* Frees a buffer that held key material, wiped first (gnutls_memset: a
 * plain memset before free may be optimised away). */
static void
wipe_free (char *buf, size_t len)
{
  if (buf == NULL)
    return;
  gnutls_memset (buf, 0, len);
  if (nbdc_tls_wipe_observer)
    nbdc_tls_wipe_observer (buf, len);
  g_free (buf);
}

/* Reads the key for username from a psktool file ("user:hexkey" lines).
 * The file holds other users' keys too: it is parsed in place and the
 * whole buffer is wiped before it is freed. */
static gboolean
setup_psk (TlsPriv *p, const NbdcTlsConfig *cfg, GError **error)
{
  const char *user = cfg->username ? cfg->username : g_get_user_name ();
  size_t ulen = strlen (user);
  char *contents = NULL;
  gsize size = 0;
  g_autoptr (GError) io_error = NULL;
  char *hexkey = NULL;
  size_t n = 0;
  gboolean ok = FALSE;

  if (!g_file_get_contents (cfg->psk_file, &contents, &size, &io_error))
    return tls_error (error, "PSK file: %s", io_error->message);
  for (char *line = contents; line < contents + size;) {
    char *end = memchr (line, '\n', contents + size - line);
    if (end == NULL)
      end = contents + size;
    char *colon = memchr (line, ':', end - line);
    if (colon && (size_t) (colon - line) == ulen
        && memcmp (line, user, ulen) == 0) {
      hexkey = colon + 1;
      n = end - hexkey;
      while (n > 0 && g_ascii_isspace (*hexkey)) {
        hexkey++;
        n--;
      }
      while (n > 0 && g_ascii_isspace (hexkey[n - 1]))
        n--;
      break;
    }
    line = end + 1;
  }
  if (hexkey == NULL) {
    tls_error (error, "%s has no key for user '%s' (give --tls-username, or "
               "add one with: psktool -u %s -p %s)", cfg->psk_file, user,
               user, cfg->psk_file);
    goto out;
  }
  size_t hex = 0;
  while (hex < n && g_ascii_isxdigit (hexkey[hex]))
    hex++;
  if (n == 0 || n % 2 != 0 || hex != n) {
    tls_error (error, "%s: the key for '%s' is not a hex string (expected "
               "psktool format user:hexkey)", cfg->psk_file, user);
    goto out;
  }

  gnutls_datum_t key = { .data = (unsigned char *) hexkey,
                         .size = (unsigned) n };
  int r = gnutls_psk_allocate_client_credentials (&p->psk);
  if (r >= 0)
    r = gnutls_psk_set_client_credentials (p->psk, user, &key,
                                           GNUTLS_PSK_KEY_HEX);
  if (r >= 0)
    r = gnutls_credentials_set (p->session, GNUTLS_CRD_PSK, p->psk);
  if (r < 0) {
    tls_error (error, "TLS PSK setup failed: %s", gnutls_strerror (r));
    goto out;
  }
  g_debug ("TLS: PSK identity '%s' from %s", user, cfg->psk_file);
  ok = TRUE;
out:
  wipe_free (contents, size);
  return ok;
}

/* ---- handshake failure messages ---- */

/* "localhost, 127.0.0.1, ::1": the names a certificate is for. */
static char *
cert_names (gnutls_x509_crt_t crt)
{
  GString *s = g_string_new (NULL);
  for (unsigned i = 0; i < 16; i++) {
    char buf[256];
    size_t size = sizeof buf - 1;
    unsigned type;
    int r = gnutls_x509_crt_get_subject_alt_name2 (crt, i, buf, &size,
                                                   &type, NULL);
    if (r == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
      break;
    if (r < 0)
      continue;
    if (type == GNUTLS_SAN_DNSNAME) {
      buf[MIN (size, sizeof buf - 1)] = '\0';
      g_autofree char *v = g_strescape (buf, NULL);
      g_string_append_printf (s, "%s%s", s->len ? ", " : "", v);
    }
    else if (type == GNUTLS_SAN_IPADDRESS && (size == 4 || size == 16)) {
      char ip[64];
      if (inet_ntop (size == 4 ? AF_INET : AF_INET6, buf, ip, sizeof ip))
        g_string_append_printf (s, "%s%s", s->len ? ", " : "", ip);
    }
  }
  if (s->len == 0) {
    char buf[256];
    size_t size = sizeof buf;
    if (gnutls_x509_crt_get_dn_by_oid (crt, GNUTLS_OID_X520_COMMON_NAME, 0,
                                       0, buf, &size) == 0) {
      g_autofree char *v = g_strescape (buf, NULL);
      g_string_append (s, v);
    }
  }
  if (s->len == 0)
    g_string_append (s, "no name at all");
  return g_string_free (s, FALSE);
}

static char *
format_time (time_t t)
{
  struct tm tm;
  char buf[64];
  if (gmtime_r (&t, &tm) == NULL
      || strftime (buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
    return g_strdup ("an unknown date");
  return g_strdup (buf);
}

/* One sentence for a failed certificate verification. */
static void
explain_verify (TlsPriv *p, const char *hostname,
                const NbdcTlsConfig *cfg, GError **error)
{
  unsigned status = gnutls_session_get_verify_cert_status (p->session);
  const gnutls_datum_t *certs;
  unsigned ncerts = 0;
  gnutls_x509_crt_t crt = NULL;

  certs = gnutls_certificate_get_peers (p->session, &ncerts);
  if (certs && ncerts > 0 && gnutls_x509_crt_init (&crt) == 0
      && gnutls_x509_crt_import (crt, &certs[0], GNUTLS_X509_FMT_DER) < 0) {
    gnutls_x509_crt_deinit (crt);
    crt = NULL;
  }

  g_autofree char *trust = cfg->certificates
    ? g_build_filename (cfg->certificates, "ca-cert.pem", NULL)
    : g_strdup ("the system's trusted CAs");
  if (status & (GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNER_NOT_CA)) {
    gboolean self = FALSE;
    g_autofree char *issuer = NULL;
    if (crt) {
      gnutls_datum_t dn = { NULL, 0 };
      self = gnutls_x509_crt_check_issuer (crt, crt) != 0;
      if (gnutls_x509_crt_get_issuer_dn3 (crt, &dn, 0) == 0) {
        issuer = g_strescape ((char *) dn.data, NULL);
        gnutls_free (dn.data);
      }
    }
    if (self)
      tls_error (error, "the server's certificate is self-signed and not "
                 "trusted (verified against %s)", trust);
    else
      tls_error (error, "the server's certificate is signed by an unknown "
                 "CA%s%s%s (verified against %s; give --tls-certificates "
                 "DIR with that CA's ca-cert.pem)",
                 issuer ? " ('" : "", issuer ? issuer : "",
                 issuer ? "')" : "", trust);
  }
  else if (status & GNUTLS_CERT_UNEXPECTED_OWNER) {
    g_autofree char *names = crt ? cert_names (crt) : g_strdup ("another name");
    tls_error (error, "the server's certificate is for %s, not %s "
               "(connect by one of those names or give --tls-hostname)",
               names, hostname ? hostname : "this host");
  }
  else if (status & GNUTLS_CERT_EXPIRED) {
    g_autofree char *when =
      format_time (crt ? gnutls_x509_crt_get_expiration_time (crt) : 0);
    tls_error (error, "the server's certificate expired on %s", when);
  }
  else if (status & GNUTLS_CERT_NOT_ACTIVATED) {
    g_autofree char *when =
      format_time (crt ? gnutls_x509_crt_get_activation_time (crt) : 0);
    tls_error (error, "the server's certificate is not valid before %s "
               "(check the clocks)", when);
  }
  else if (status & GNUTLS_CERT_REVOKED)
    tls_error (error, "the server's certificate has been revoked");
  else {
    gnutls_datum_t out = { NULL, 0 };
    if (gnutls_certificate_verification_status_print
        (status, GNUTLS_CRT_X509, &out, 0) == 0) {
      tls_error (error, "the server's certificate was rejected: %s",
                 (char *) out.data);
      gnutls_free (out.data);
    }
    else
      tls_error (error, "the server's certificate was rejected");
  }
  if (crt)
    gnutls_x509_crt_deinit (crt);
}

static void
explain_failure (TlsPriv *p, int r, const char *hostname,
                 const NbdcTlsConfig *cfg, GError **error)
{
  if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
    explain_verify (p, hostname, cfg, error);
    return;
  }
  gboolean asked_cert = p->kind == AUTH_X509
    && gnutls_certificate_client_get_request_status (p->session);
  if (r == GNUTLS_E_FATAL_ALERT_RECEIVED) {
    gnutls_alert_description_t a = gnutls_alert_get (p->session);
    const char *aname = gnutls_alert_get_name (a);
    if (asked_cert && !p->have_client_cert)
      tls_error (error, "the server asked for a client certificate and we "
                 "have none (put client-cert.pem and client-key.pem in the "
                 "--tls-certificates directory); server said: %s", aname);
    else if (asked_cert && (a == GNUTLS_A_BAD_CERTIFICATE
                            || a == GNUTLS_A_UNKNOWN_CA
                            || a == GNUTLS_A_CERTIFICATE_UNKNOWN
                            || a == GNUTLS_A_ACCESS_DENIED))
      tls_error (error, "the server rejected our client certificate "
                 "(server said: %s)", aname);
    else if (p->kind == AUTH_PSK)
      tls_error (error, "the server rejected the pre-shared key: wrong key "
                 "or unknown user name (server said: %s)", aname);
    else
      tls_error (error, "TLS handshake failed: the server sent the alert "
                 "'%s'", aname);
    return;
  }
  if (p->kind == AUTH_PSK
      && (r == GNUTLS_E_DECRYPTION_FAILED || r == GNUTLS_E_INSUFFICIENT_CREDENTIALS
          || r == GNUTLS_E_KEY_USAGE_VIOLATION)) {
    tls_error (error, "the server rejected the pre-shared key: wrong key or "
               "unknown user name (%s)", gnutls_strerror (r));
    return;
  }
  if (r == GNUTLS_E_PREMATURE_TERMINATION || r == GNUTLS_E_PULL_ERROR
      || r == GNUTLS_E_PUSH_ERROR) {
    if (asked_cert && !p->have_client_cert)
      tls_error (error, "the server asked for a client certificate and we "
                 "have none (put client-cert.pem and client-key.pem in the "
                 "--tls-certificates directory), then closed the "
                 "connection");
    else if (p->kind == AUTH_PSK)
      tls_error (error, "the server rejected the pre-shared key (wrong key "
                 "or unknown user name): it closed the connection during "
                 "the TLS handshake");
    else
      tls_error (error, "TLS handshake failed: the server closed the "
                 "connection%s", p->kind == AUTH_ANON
                 ? " (does it allow anonymous TLS, tls-type=anon?)" : "");
    return;
  }
  if (r == GNUTLS_E_UNEXPECTED_PACKET_LENGTH
      || r == GNUTLS_E_UNEXPECTED_PACKET
      || r == GNUTLS_E_UNSUPPORTED_VERSION_PACKET) {
    tls_error (error, "TLS handshake failed: the server did not answer with "
               "TLS (%s)", gnutls_strerror (r));
    return;
  }
  tls_error (error, "TLS handshake failed: %s", gnutls_strerror (r));
}

/* ---- the handshake ---- */

/* Waits (poll) for the direction gnutls is blocked on; FALSE past the
 * deadline with NBDFS_ERROR_TIMEOUT set. */
static gboolean
wait_handshake (TlsPriv *p, gint64 deadline, GError **error)
{
  struct pollfd pfd = {
    .fd = p->fd,
    .events = gnutls_record_get_direction (p->session) ? POLLOUT : POLLIN,
  };
  for (;;) {
    int ms = -1;
    if (deadline > 0) {
      gint64 left = deadline - g_get_monotonic_time ();
      if (left <= 0)
        break;
      ms = (int) MIN ((left + 999) / 1000, G_MAXINT);
    }
    int r = poll (&pfd, 1, ms);
    if (r > 0)
      return TRUE;
    if (r < 0 && errno != EINTR) {
      int e = errno;
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e),
                   "TLS handshake: poll: %s", g_strerror (e));
      return FALSE;
    }
    if (r == 0)
      break;
  }
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_TIMEOUT,
               "TLS handshake timed out (the server stopped answering)");
  return FALSE;
}

/* TLS 1.3 finishes the client's handshake before the server has checked
 * our (missing) certificate; its refusal arrives as an alert afterwards.
 * After STARTTLS an NBD server speaks only when spoken to, so anything that
 * arrives within a moment is TLS housekeeping (session tickets: accepted)
 * or that alert. Only done when the server asked for a certificate and we
 * had none to give, so the wait (at most 2 s) costs nothing otherwise. */
static gboolean
await_verdict (TlsPriv *p, gint64 deadline, GError **error)
{
  gint64 until = g_get_monotonic_time () + 2 * G_USEC_PER_SEC;
  if (deadline > 0 && deadline < until)
    until = deadline;
  for (;;) {
    gint64 left = until - g_get_monotonic_time ();
    if (left <= 0)
      return TRUE;
    struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
    int r = poll (&pfd, 1, (int) ((left + 999) / 1000));
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return TRUE;
    ssize_t n = gnutls_record_recv (p->session, p->stash, sizeof p->stash);
    if (n > 0) {
      p->stash_len = n;    /* early data from the server: keep it */
      return TRUE;
    }
    if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
      return TRUE;         /* a ticket or the like: the server accepted us */
    if (n == 0 || gnutls_error_is_fatal ((int) n)) {
      const char *why = n == GNUTLS_E_FATAL_ALERT_RECEIVED
        ? gnutls_alert_get_name (gnutls_alert_get (p->session))
        : n == 0 || n == GNUTLS_E_PREMATURE_TERMINATION
        ? "it closed the connection" : gnutls_strerror ((int) n);
      return tls_error (error, "the server asked for a client certificate "
                        "and we have none (put client-cert.pem and "
                        "client-key.pem in the --tls-certificates "
                        "directory): %s", why);
    }
  }
}

NbdTransport *
nbdc_tls_start (int fd, const NbdcTlsConfig *cfg, const char *hostname,
                gint64 deadline, GError **error)
{
  TlsPriv *p = g_new0 (TlsPriv, 1);
  const char *priority;
  int r;

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
    goto fail;
  }
  p->kind = config_kind (cfg);
  if (cfg->hostname)
    hostname = cfg->hostname;

  r = gnutls_init (&p->session, GNUTLS_CLIENT | GNUTLS_NO_SIGNAL);
  if (r < 0) {
    p->session = NULL;
    tls_error (error, "TLS setup failed: %s", gnutls_strerror (r));
    goto fail;
  }
  switch (p->kind) {
  case AUTH_PSK:
    priority = PRIORITY_PSK;
    if (!setup_psk (p, cfg, error))
      goto fail;
    break;
  case AUTH_ANON:
    priority = PRIORITY_ANON;
    r = gnutls_anon_allocate_client_credentials (&p->anon);
    if (r >= 0)
      r = gnutls_credentials_set (p->session, GNUTLS_CRD_ANON, p->anon);
    if (r < 0) {
      tls_error (error, "TLS setup failed: %s", gnutls_strerror (r));
      goto fail;
    }
    break;
  default:
    priority = PRIORITY_BASE;
    if (!setup_x509 (p, cfg, error))
      goto fail;
    if (cfg->no_verify)
      g_debug ("TLS: not verifying the server's certificate "
               "(--tls-no-verify / tls-verify-peer=0)");
    else {
      /* A hostname check for names and IP literals alike (gnutls matches
       * IP SANs for literals). No name (a Unix socket without
       * --tls-hostname): refused, as qemu does ("No hostname for
       * certificate validation"), since a chain check alone would accept
       * any certificate the CA (or the system's store) ever signed. */
      if (hostname == NULL) {
        tls_error (error, "no name to check the server's certificate "
                   "against (a Unix socket has none): give --tls-hostname "
                   "NAME (tls-hostname=NAME in the URI), a name the "
                   "certificate is for, e.g. localhost");
        goto fail;
      }
      gnutls_session_set_verify_cert (p->session, hostname, 0);
    }
    /* SNI: only for DNS names, never IP literals (RFC 6066 section 3). */
    if (hostname && !g_hostname_is_ip_address (hostname))
      gnutls_server_name_set (p->session, GNUTLS_NAME_DNS, hostname,
                              strlen (hostname));
    break;
  }
  const char *err_pos = NULL;
  r = gnutls_priority_set_direct (p->session, priority, &err_pos);
  if (r < 0) {
    tls_error (error, "TLS priority string rejected at '%s': %s",
               err_pos ? err_pos : "?", gnutls_strerror (r));
    goto fail;
  }

  gnutls_transport_set_ptr (p->session, p);
  gnutls_transport_set_pull_function (p->session, tls_pull);
  gnutls_transport_set_pull_timeout_function (p->session, tls_pull_timeout);
  gnutls_transport_set_vec_push_function (p->session, tls_vec_push);
  /* Our deadline bounds the handshake, not gnutls's default 40 s. */
  gnutls_handshake_set_timeout (p->session, 0);

  for (;;) {
    r = gnutls_handshake (p->session);
    if (r == GNUTLS_E_SUCCESS)
      break;
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
      if (!wait_handshake (p, deadline, error))
        goto fail;
      continue;
    }
    if (!gnutls_error_is_fatal (r)) {
      g_debug ("TLS handshake: %s (continuing)", gnutls_strerror (r));
      continue;
    }
    g_debug ("TLS handshake failed: %s (%d)", gnutls_strerror (r), r);
    explain_failure (p, r, hostname, cfg, error);
    goto fail;
  }
  if (p->kind == AUTH_X509 && !p->have_client_cert
      && gnutls_certificate_client_get_request_status (p->session)
      && gnutls_protocol_get_version (p->session) == GNUTLS_TLS1_3
      && !await_verdict (p, deadline, error))
    goto fail;
  p->rx = g_malloc (RX_CAP);
  p->tx = g_malloc (TX_CAP);
  p->established = TRUE;

  if (g_log_writer_default_would_drop (G_LOG_LEVEL_DEBUG, G_LOG_DOMAIN)
      == FALSE) {
    char *desc = gnutls_session_get_desc (p->session);
    g_debug ("TLS: handshake done: %s%s", desc ? desc : "?",
             gnutls_session_is_resumed (p->session) ? " (resumed)" : "");
    gnutls_free (desc);
  }

  NbdTransport *t = g_new0 (NbdTransport, 1);
  t->ops = &tls_ops;
  t->fd = fd;
  t->priv = p;
  return t;

fail:
  tls_priv_free (p);
  return NULL;
}
