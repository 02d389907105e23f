/* Unit tests for nbdclient/tls.c: nbdc_tls_start against a real gnutls
 * server in a thread on a socketpair (the NBD part is covered by
 * test/test-tls*.sh against nbdkit and qemu-nbd). Certificates come from
 * scripts/make-pki.sh into a temporary directory; nothing is committed.
 *
 * Covers: X.509 success, unknown CA, self-signed, name mismatch, expired,
 * missing client certificate, PSK success / wrong key / unknown user,
 * handshake deadline, a peer that does not speak TLS, and one receiving
 * thread with one sending thread while the server forces TLS 1.3 key
 * updates (gnutls's rules for sharing a session, see tls.c).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <gnutls/gnutls.h>

#include "kernelattach/kernel.h"
#include "nbdclient/conn.h"
#include "nbdclient/error.h"
#include "nbdclient/protocol.h"
#include "nbdclient/tls.h"

static char *pki;          /* make-pki.sh output */
static char *psk_file;     /* make-psk.sh output: user "alice" */
static char *wrong_psk;    /* alice with another key */

/* Hostile servers: after the handshake they never read again (so the
 * client's sends fill the socket and wait), and then: */
enum {
  HOSTILE_NONE,
  HOSTILE_STALL,         /* nothing at all */
  HOSTILE_HEADER_BYTE,   /* one byte of a record header, then nothing */
  HOSTILE_JUNK,          /* raw junk as fast as the client takes it */
  HOSTILE_TICKETS,       /* valid records without data (session tickets),
                            as fast as the client takes them */
};
/* A flood stops after this much, so that a client without a bound on
 * its buffers grows by this much instead of by all the memory there is. */
#define FLOOD_MAX (192 * 1024 * 1024)

typedef struct {
  int fd;
  const char *cert_dir;    /* server-cert.pem/server-key.pem; NULL = PSK */
  const char *ca_dir;      /* for client certificate checks */
  gboolean require_client_cert;
  gboolean echo;           /* after the handshake: echo until EOF */
  gboolean key_updates;    /* TLS 1.3 key updates (KU_PEER) while echoing */
  gboolean trickle;        /* after the handshake: a TLS 1.3 session
                              ticket every 50 ms, never any data */
  gboolean partial_record; /* after the handshake: half a record, then
                              silence until the client hangs up */
  int hostile;             /* HOSTILE_*: after the handshake, never reads */
  gint release;            /* atomic: the test is over, stop */
  guint64 flooded;         /* bytes the flood got out */
  int handshake_result;
  guint64 echoed;
  gint key_updates_done;     /* atomic */
} Server;

static guint8
pattern_byte (guint64 off)
{
  return (guint8) ((off * 2654435761u) >> 13);
}

static gpointer
server_thread (gpointer data)
{
  Server *s = data;
  gnutls_session_t session;
  gnutls_certificate_credentials_t x509 = NULL;
  gnutls_psk_server_credentials_t psk = NULL;

  g_assert_cmpint (gnutls_init (&session, GNUTLS_SERVER | GNUTLS_NO_SIGNAL), ==, 0);
  if (s->cert_dir) {
    g_autofree char *cert = g_build_filename (s->cert_dir, "server-cert.pem",
                                              NULL);
    g_autofree char *key = g_build_filename (s->cert_dir, "server-key.pem",
                                             NULL);
    gnutls_certificate_allocate_credentials (&x509);
    g_assert_cmpint (gnutls_certificate_set_x509_key_file
                     (x509, cert, key, GNUTLS_X509_FMT_PEM), >=, 0);
    if (s->ca_dir) {
      g_autofree char *ca = g_build_filename (s->ca_dir, "ca-cert.pem", NULL);
      g_assert_cmpint (gnutls_certificate_set_x509_trust_file
                       (x509, ca, GNUTLS_X509_FMT_PEM), >, 0);
    }
    gnutls_credentials_set (session, GNUTLS_CRD_CERTIFICATE, x509);
    if (s->require_client_cert)
      gnutls_certificate_server_set_request (session, GNUTLS_CERT_REQUIRE);
    gnutls_priority_set_direct (session, "NORMAL", NULL);
  }
  else {
    gnutls_psk_allocate_server_credentials (&psk);
    g_assert_cmpint (gnutls_psk_set_server_credentials_file (psk, psk_file),
                     ==, 0);
    gnutls_credentials_set (session, GNUTLS_CRD_PSK, psk);
    gnutls_priority_set_direct (session,
                                "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK", NULL);
  }
  gnutls_datum_t ticket_key = { NULL, 0 };
  if (s->trickle || s->hostile == HOSTILE_TICKETS) {
    g_assert_cmpint (gnutls_session_ticket_key_generate (&ticket_key), ==, 0);
    g_assert_cmpint (gnutls_session_ticket_enable_server (session,
                                                          &ticket_key), ==, 0);
  }
  gnutls_transport_set_int (session, s->fd);
  gnutls_handshake_set_timeout (session, 10000);
  int r;
  do
    r = gnutls_handshake (session);
  while (r < 0 && !gnutls_error_is_fatal (r));
  s->handshake_result = r;

  if (r == 0 && s->echo) {
    static char buf[65536];
    guint records = 0;
    gint64 last_update = 0;
    for (;;) {
      ssize_t n = gnutls_record_recv (session, buf, sizeof buf);
      if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
        continue;
      if (n <= 0)
        break;
      /* gnutls refuses more than 8 key updates a second (a DoS guard
       * in lib/tls13/key_update.c): one every 130 ms at most. */
      if (s->key_updates && ++records % 16 == 0
          && g_get_monotonic_time () - last_update > 130000
          && gnutls_session_key_update (session, GNUTLS_KU_PEER) == 0) {
        g_atomic_int_inc (&s->key_updates_done);
        last_update = g_get_monotonic_time ();
      }
      for (ssize_t off = 0; off < n;) {
        ssize_t w = gnutls_record_send (session, buf + off, n - off);
        if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED)
          continue;
        g_assert_cmpint (w, >, 0);
        off += w;
      }
      s->echoed += n;
    }
    gnutls_bye (session, GNUTLS_SHUT_WR);
  }
  if (r == 0 && s->trickle) {
    /* Authenticated records that carry no application data: the client
     * makes no NBD progress, so its deadline must still fire. */
    int sent = 0, tr;
    while ((tr = gnutls_session_ticket_send (session, 1, 0)) == 0) {
      sent++;
      g_usleep (50000);
    }
    g_test_message ("server: %d tickets sent, then %s", sent,
                    gnutls_strerror (tr));
  }
  if (r == 0 && s->partial_record) {
    /* A record header promising 16 KiB of application data, 3 bytes of
     * it, and nothing more: anyone on the path can do this (the record
     * cannot be authenticated before it is complete). */
    static const guint8 half[] = { 0x17, 0x03, 0x03, 0x40, 0x00, 1, 2, 3 };
    g_assert_cmpint (write (s->fd, half, sizeof half), ==, sizeof half);
    char buf[4096];
    while (read (s->fd, buf, sizeof buf) > 0)
      ;
  }
  if (r == 0 && s->hostile) {
    if (s->hostile == HOSTILE_HEADER_BYTE) {
      /* Once the client's WRITE has filled the socket: its sender waits
       * for room while the reader wakes up for this byte. */
      g_usleep (300000);
      static const guint8 type = 0x17;   /* application_data */
      g_assert_cmpint (write (s->fd, &type, 1), ==, 1);
    }
    guint8 junk[16384];
    for (size_t i = 0; i < sizeof junk; i++)
      junk[i] = pattern_byte (i * 7919);
    while (!g_atomic_int_get (&s->release) && s->flooded < FLOOD_MAX) {
      if (s->hostile == HOSTILE_JUNK) {
        ssize_t w = send (s->fd, junk, sizeof junk, MSG_NOSIGNAL);
        if (w <= 0)
          break;
        s->flooded += w;
      }
      else if (s->hostile == HOSTILE_TICKETS) {
        if (gnutls_session_ticket_send (session, 1, 0) != 0)
          break;
        s->flooded += 200;     /* about one ticket record */
      }
      else
        g_usleep (10000);
    }
    g_test_message ("server: %" G_GUINT64_FORMAT " bytes of flood",
                    s->flooded);
    while (!g_atomic_int_get (&s->release))
      g_usleep (10000);
  }
  /* Closing our end tells a failing client that the handshake is over. */
  shutdown (s->fd, SHUT_RDWR);
  gnutls_deinit (session);
  gnutls_free (ticket_key.data);
  if (x509)
    gnutls_certificate_free_credentials (x509);
  if (psk)
    gnutls_psk_free_server_credentials (psk);
  return NULL;
}

static void
free_transport (NbdTransport *t)
{
  if (t == NULL)
    return;
  t->ops->free_priv (t);
  close (t->fd);
  g_free (t);
}

/* Runs a handshake of cfg against server s; returns the transport (or NULL
 * with *error). Starts the server thread in *thread. */
static NbdTransport *
start (Server *s, const NbdcTlsConfig *cfg, const char *hostname,
       GThread **thread, int *client_fd, GError **error)
{
  int sv[2];
  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
                   ==, 0);
  s->fd = sv[1];
  *client_fd = sv[0];
  *thread = g_thread_new ("tls-server", server_thread, s);
  return nbdc_tls_start (sv[0], cfg, hostname,
                         g_get_monotonic_time () + 10 * G_USEC_PER_SEC,
                         error);
}

static void
finish (Server *s, GThread *thread, NbdTransport *t, int client_fd)
{
  if (t)
    t->ops->shutdown (t);
  else
    shutdown (client_fd, SHUT_RDWR);
  g_thread_join (thread);
  if (t)
    free_transport (t);
  else
    close (client_fd);
  close (s->fd);
}

/* Expects the handshake to fail with NBDFS_ERROR_TLS and a message
 * matching pattern (a GRegex). */
static void
expect_failure (Server *s, const NbdcTlsConfig *cfg, const char *hostname,
                const char *pattern)
{
  g_autoptr (GError) error = NULL;
  GThread *thread;
  int fd;
  NbdTransport *t = start (s, cfg, hostname, &thread, &fd, &error);
  g_assert_null (t);
  g_assert_nonnull (error);
  g_test_message ("message: %s", error->message);
  g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_TLS);
  if (!g_regex_match_simple (pattern, error->message, 0, 0))
    g_error ("'%s' does not match /%s/", error->message, pattern);
  finish (s, thread, NULL, fd);
}

static void
test_x509_ok (void)
{
  Server s = { .cert_dir = pki, .echo = TRUE };
  NbdcTlsConfig cfg = { .certificates = pki };
  g_autoptr (GError) error = NULL;
  GThread *thread;
  int fd;
  NbdTransport *t = start (&s, &cfg, "localhost", &thread, &fd, &error);
  g_assert_no_error (error);
  g_assert_nonnull (t);
  g_assert_cmpstr (t->ops->name, ==, "tls");

  /* A header and a payload in one sendv, echoed back. */
  char hdr[28] = "header--------------------", payload[5000], back[5028];
  memset (payload, 'p', sizeof payload);
  struct iovec iov[2] = { { hdr, sizeof hdr }, { payload, sizeof payload } };
  g_assert_cmpint (t->ops->sendv (t, iov, 2), ==, sizeof hdr + sizeof payload);
  size_t got = 0;
  while (got < sizeof back) {
    ssize_t n = t->ops->recv (t, back + got, sizeof back - got);
    g_assert_cmpint (n, >, 0);
    got += n;
  }
  g_assert_cmpmem (back, sizeof hdr, hdr, sizeof hdr);
  g_assert_cmpmem (back + sizeof hdr, sizeof payload, payload,
                   sizeof payload);
  g_assert_false (t->ops->pending (t));
  finish (&s, thread, t, fd);
  g_assert_cmpint (s.handshake_result, ==, 0);
}

static void
test_ip_literal (void)
{
  Server s = { .cert_dir = pki };
  NbdcTlsConfig cfg = { .certificates = pki };
  g_autoptr (GError) error = NULL;
  GThread *thread;
  int fd;
  NbdTransport *t = start (&s, &cfg, "127.0.0.1", &thread, &fd, &error);
  g_assert_no_error (error);
  finish (&s, thread, t, fd);
}

static void
test_unknown_ca (void)
{
  Server s = { .cert_dir = pki };
  g_autofree char *wrong = g_build_filename (pki, "wrong", NULL);
  NbdcTlsConfig cfg = { .certificates = wrong };
  expect_failure (&s, &cfg, "localhost",
                  "^the server's certificate is signed by an unknown CA "
                  "\\('CN=nbdfs test CA'\\)");
}

static void
test_self_signed (void)
{
  g_autofree char *dir = g_build_filename (pki, "selfsigned", NULL);
  Server s = { .cert_dir = dir };
  NbdcTlsConfig cfg = { .certificates = pki };
  expect_failure (&s, &cfg, "localhost",
                  "^the server's certificate is self-signed and not trusted");
}

static void
test_name_mismatch (void)
{
  Server s = { .cert_dir = pki };
  NbdcTlsConfig cfg = { .certificates = pki };
  expect_failure (&s, &cfg, "wrong.example",
                  "^the server's certificate is for localhost, 127\\.0\\.0\\.1, "
                  "::1, not wrong\\.example");
  /* --tls-hostname overrides the address's host. */
  cfg.hostname = "other.example";
  expect_failure (&s, &cfg, "localhost", "not other\\.example");
}

static void
test_expired (void)
{
  g_autofree char *dir = g_build_filename (pki, "expired", NULL);
  Server s = { .cert_dir = dir };
  NbdcTlsConfig cfg = { .certificates = pki };
  expect_failure (&s, &cfg, "localhost",
                  "^the server's certificate expired on 2001-12-31");
}

static void
test_no_verify (void)
{
  g_autofree char *dir = g_build_filename (pki, "expired", NULL);
  Server s = { .cert_dir = dir };
  g_autofree char *wrong = g_build_filename (pki, "wrong", NULL);
  NbdcTlsConfig cfg = { .certificates = wrong, .no_verify = TRUE };
  g_autoptr (GError) error = NULL;
  GThread *thread;
  int fd;
  NbdTransport *t = start (&s, &cfg, "wrong.example", &thread, &fd, &error);
  g_assert_no_error (error);
  finish (&s, thread, t, fd);
}

static void
test_client_cert_missing (void)
{
  /* A directory with only the CA: no client certificate to offer. */
  g_autofree char *dir = g_build_filename (pki, "ca-only", NULL);
  g_autofree char *src = g_build_filename (pki, "ca-cert.pem", NULL);
  g_autofree char *dst = g_build_filename (dir, "ca-cert.pem", NULL);
  g_autofree char *c = NULL;
  gsize cl;
  g_mkdir_with_parents (dir, 0700);
  g_assert_true (g_file_get_contents (src, &c, &cl, NULL));
  g_assert_true (g_file_set_contents (dst, c, cl, NULL));

  Server s = { .cert_dir = pki, .ca_dir = pki, .require_client_cert = TRUE };
  NbdcTlsConfig cfg = { .certificates = dir };
  expect_failure (&s, &cfg, "localhost",
                  "^the server asked for a client certificate and we have "
                  "none");

  /* With the client certificate it works. */
  cfg.certificates = pki;
  g_autoptr (GError) error = NULL;
  GThread *thread;
  int fd;
  NbdTransport *t = start (&s, &cfg, "localhost", &thread, &fd, &error);
  g_assert_no_error (error);
  finish (&s, thread, t, fd);
  g_assert_cmpint (s.handshake_result, ==, 0);
}

static void
test_missing_ca_file (void)
{
  g_autofree char *dir = g_build_filename (pki, "empty", NULL);
  g_mkdir_with_parents (dir, 0700);
  NbdcTlsConfig cfg = { .certificates = dir };
  g_autoptr (GError) error = NULL;
  int sv[2];
  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
  g_assert_null (nbdc_tls_start (sv[0], &cfg, "localhost", 0, &error));
  g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_TLS);
  g_assert_true (strstr (error->message, "ca-cert.pem is missing") != NULL);
  close (sv[0]);
  close (sv[1]);
}

static void
test_psk_ok (void)
{
  Server s = { .echo = TRUE };
  NbdcTlsConfig cfg = { .psk_file = psk_file, .username = "alice" };
  g_autoptr (GError) error = NULL;
  GThread *thread;
  int fd;
  NbdTransport *t = start (&s, &cfg, NULL, &thread, &fd, &error);
  g_assert_no_error (error);
  char buf[4] = "ping", back[4];
  g_assert_cmpint (t->ops->send (t, buf, 4), ==, 4);
  size_t got = 0;
  while (got < 4) {
    ssize_t n = t->ops->recv (t, back + got, 4 - got);
    g_assert_cmpint (n, >, 0);
    got += n;
  }
  g_assert_cmpmem (back, 4, "ping", 4);
  finish (&s, thread, t, fd);
}

/* The PSK file holds other users' keys: the buffer it was read into is
 * wiped before it is freed (tls.c wipe_free), whether the handshake then
 * works or the user is not found. */
static guint wiped_calls;
static gboolean wiped_clean;

static void
observe_wipe (const void *buf, size_t len)
{
  const guint8 *b = buf;
  wiped_calls++;
  for (size_t i = 0; i < len; i++)
    if (b[i] != 0)
      wiped_clean = FALSE;
}

static void
test_psk_file_wiped (void)
{
  /* wrong_psk holds keys for alice and mallory; the server knows
   * psk_file's alice, so the handshake fails, after the setup. */
  nbdc_tls_wipe_observer = observe_wipe;
  wiped_calls = 0;
  wiped_clean = TRUE;
  Server s = { 0 };
  NbdcTlsConfig cfg = { .psk_file = wrong_psk, .username = "mallory" };
  g_autoptr (GError) error = NULL;
  GThread *thread;
  int fd;
  NbdTransport *t = start (&s, &cfg, NULL, &thread, &fd, &error);
  finish (&s, thread, t, fd);
  g_assert_cmpuint (wiped_calls, ==, 1);
  g_assert_true (wiped_clean);
  g_clear_error (&error);

  cfg.username = "nobody";
  Server s2 = { 0 };
  t = start (&s2, &cfg, NULL, &thread, &fd, &error);
  g_assert_null (t);
  finish (&s2, thread, t, fd);
  g_assert_cmpuint (wiped_calls, ==, 2);
  g_assert_true (wiped_clean);
  nbdc_tls_wipe_observer = NULL;
}

/* A Unix socket has no host name: X.509 verification without
 * --tls-hostname is refused with a sentence naming the option (a chain
 * check alone would accept any certificate the CA ever signed);
 * --tls-hostname makes it work; --tls-no-verify does not need a name. */
static void
test_unix_needs_hostname (void)
{
  Server s = { .cert_dir = pki };
  NbdcTlsConfig cfg = { .certificates = pki };
  expect_failure (&s, &cfg, NULL,
                  "^no name to check the server's certificate against \\(a "
                  "Unix socket has none\\): give --tls-hostname NAME");
  Server s2 = { .cert_dir = pki };
  cfg.hostname = "localhost";
  g_autoptr (GError) error = NULL;
  GThread *thread;
  int fd;
  NbdTransport *t = start (&s2, &cfg, NULL, &thread, &fd, &error);
  g_assert_no_error (error);
  finish (&s2, thread, t, fd);
  Server s3 = { .cert_dir = pki };
  NbdcTlsConfig nv = { .certificates = pki, .no_verify = TRUE };
  t = start (&s3, &nv, NULL, &thread, &fd, &error);
  g_assert_no_error (error);
  finish (&s3, thread, t, fd);
}

static void
test_psk_wrong_key (void)
{
  Server s = { 0 };
  NbdcTlsConfig cfg = { .psk_file = wrong_psk, .username = "alice" };
  expect_failure (&s, &cfg, NULL,
                  "^the server rejected the pre-shared key");
}

static void
test_psk_unknown_user (void)
{
  Server s = { 0 };
  /* In our file, but not in the server's. */
  NbdcTlsConfig cfg = { .psk_file = wrong_psk, .username = "mallory" };
  expect_failure (&s, &cfg, NULL,
                  "^the server rejected the pre-shared key");
  /* Not in our file at all: said before any network traffic. */
  cfg.username = "nobody";
  expect_failure (&s, &cfg, NULL, "has no key for user 'nobody'");
}

static void
test_deadline (void)
{
  NbdcTlsConfig cfg = { .certificates = pki };
  g_autoptr (GError) error = NULL;
  int sv[2];
  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
  /* Nobody answers on sv[1]. */
  g_assert_null (nbdc_tls_start (sv[0], &cfg, "localhost",
                                 g_get_monotonic_time () + 200000, &error));
  g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_TIMEOUT);
  close (sv[0]);
  close (sv[1]);
}

static gpointer
plain_peer (gpointer data)
{
  int fd = GPOINTER_TO_INT (data);
  char buf[4096];
  /* Read the ClientHello, answer like a server that never heard of TLS. */
  (void) !read (fd, buf, sizeof buf);
  static const char reply[] = "NBDMAGICIHAVEOPT\0\x03 this is not TLS at all";
  (void) !write (fd, reply, sizeof reply);
  shutdown (fd, SHUT_WR);
  return NULL;
}

static void
test_not_tls (void)
{
  NbdcTlsConfig cfg = { .certificates = pki };
  g_autoptr (GError) error = NULL;
  int sv[2];
  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
  GThread *th = g_thread_new ("plain", plain_peer, GINT_TO_POINTER (sv[1]));
  g_assert_null (nbdc_tls_start (sv[0], &cfg, "localhost",
                                 g_get_monotonic_time () + 10000000, &error));
  g_test_message ("message: %s", error->message);
  g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_TLS);
  g_assert_true (g_str_has_prefix (error->message, "TLS handshake failed"));
  g_thread_join (th);
  close (sv[0]);
  close (sv[1]);
}

/* ---- one sender thread, one receiver thread, key updates ---- */

/* The sender streams at least MIN_STREAM and until the server has done 3
 * key updates (they are rate-limited, so this takes about 400 ms). */
#define MIN_STREAM (8 * 1024 * 1024)
#define MAX_STREAM (G_GUINT64_CONSTANT (2) << 30)

typedef struct {
  NbdTransport *t;
  Server *server;
  guint64 total;     /* atomic-ish: set once, before the last chunk */
  gint done;
} Stream;

static gpointer
sender (gpointer data)
{
  Stream *st = data;
  NbdTransport *t = st->t;
  static guint8 buf[3 * 65536 + 17];
  guint64 off = 0;
  for (;;) {
    /* Two iovecs of odd sizes, as a request header + payload would be. */
    size_t n1 = 28, n2 = sizeof buf - 28;
    if ((off >= MIN_STREAM
         && g_atomic_int_get (&st->server->key_updates_done) >= 3)
        || off >= MAX_STREAM) {
      st->total = off + n1 + n2;
      g_atomic_int_set (&st->done, 1);
    }
    for (size_t i = 0; i < n1 + n2; i++)
      buf[i] = pattern_byte (off + i);
    struct iovec iov[2] = { { buf, n1 }, { buf + n1, n2 } };
    int cnt = 2;
    size_t left = n1 + n2;
    struct iovec *v = iov;
    while (left > 0) {
      ssize_t w = t->ops->sendv (t, v, cnt);
      if (w < 0 && errno == EAGAIN)
        continue;             /* the same bytes again (transport.h) */
      g_assert_cmpint (w, >, 0);
      left -= w;
      off += w;
      while (cnt > 0 && (size_t) w >= v->iov_len) {
        w -= v->iov_len;
        v++;
        cnt--;
      }
      if (cnt > 0) {
        v->iov_base = (char *) v->iov_base + w;
        v->iov_len -= w;
      }
    }
    if (g_atomic_int_get (&st->done))
      return NULL;
  }
}

static void
test_two_threads_key_update (void)
{
  Server s = { .cert_dir = pki, .echo = TRUE, .key_updates = TRUE };
  NbdcTlsConfig cfg = { .certificates = pki };
  g_autoptr (GError) error = NULL;
  GThread *thread;
  int fd;
  NbdTransport *t = start (&s, &cfg, "localhost", &thread, &fd, &error);
  g_assert_no_error (error);

  Stream st = { .t = t, .server = &s };
  GThread *snd = g_thread_new ("sender", sender, &st);
  static guint8 buf[100000];
  guint64 off = 0;
  while (!g_atomic_int_get (&st.done) || off < st.total) {
    ssize_t n = t->ops->recv (t, buf, sizeof buf);
    g_assert_cmpint (n, >, 0);
    for (ssize_t i = 0; i < n; i++)
      if (buf[i] != pattern_byte (off + i))
        g_error ("byte %" G_GUINT64_FORMAT " differs", off + i);
    off += n;
  }
  g_thread_join (snd);
  g_assert_cmpuint (off, ==, st.total);
  finish (&s, thread, t, fd);
  g_test_message ("%d key updates in %" G_GUINT64_FORMAT " MiB",
                  s.key_updates_done, off >> 20);
  g_assert_cmpint (s.key_updates_done, >=, 3);
  g_assert_cmpuint (s.echoed, ==, st.total);
}

/* Event-loop mode (the kernel relay's): one thread sends 8 MiB to an echo
 * server. No call waits: a send takes what the session's buffer has room
 * for, else EAGAIN; the thread then polls for what nbdc_tls_poll_events
 * says, flushes and reads the echoes (the server stops reading while its
 * replies are not read, so both must go on). recv returns EAGAIN when
 * nothing is there. The buffers never hold more than their bound. */
static void
test_single_thread_no_deadlock (void)
{
  Server s = { .cert_dir = pki, .echo = TRUE };
  NbdcTlsConfig cfg = { .certificates = pki };
  g_autoptr (GError) error = NULL;
  GThread *thread;
  int fd;
  NbdTransport *t = start (&s, &cfg, "localhost", &thread, &fd, &error);
  g_assert_no_error (error);
  nbdc_tls_set_single_thread (t);

  static char buf[65536];
  errno = 0;
  g_assert_cmpint (t->ops->recv (t, buf, sizeof buf), ==, -1);
  g_assert_cmpint (errno, ==, EAGAIN);

  const size_t total = 8 * 1024 * 1024;
  g_autofree guint8 *data = g_malloc (total);
  for (size_t i = 0; i < total; i++)
    data[i] = pattern_byte (i);
  size_t sent = 0, got = 0;
  unsigned eagain = 0, calls = 0, slow = 0;
  while (got < total) {
    gboolean progress = FALSE;
    if (sent < total) {
      struct iovec iov = { data + sent, total - sent };
      gint64 t0 = g_get_monotonic_time ();
      ssize_t w = t->ops->sendv (t, &iov, 1);
      gint64 took = g_get_monotonic_time () - t0;
      /* Never waits. A loaded machine may deschedule any one call, so
       * a slow call alone does not fail: a sendv that waited for room
       * (up to the 200 ms send bound, or for ever) makes every call that
       * finds no room slow, one that does not wait only the unlucky ones. */
      g_assert_cmpint (took, <, 5 * G_USEC_PER_SEC);
      calls++;
      if (w < 0) {
        g_assert_cmpint (errno, ==, EAGAIN);
        eagain++;
        if (took >= 150000)
          slow++;
      }
      else {
        sent += w;
        progress = TRUE;
      }
    }
    for (;;) {
      ssize_t n = t->ops->recv (t, buf, sizeof buf);
      if (n < 0) {
        g_assert_cmpint (errno, ==, EAGAIN);
        break;
      }
      g_assert_cmpint (n, >, 0);
      for (ssize_t i = 0; i < n; i++)
        if (buf[i] != (char) pattern_byte (got + i))
          g_error ("byte %zu differs", got + i);
      got += n;
      progress = TRUE;
    }
    if (!progress && !t->ops->pending (t)) {
      struct pollfd pfd = { .fd = t->fd,
                            .events = nbdc_tls_poll_events (t) };
      if (sent < total)
        pfd.events |= POLLOUT;
      g_assert_cmpint (poll (&pfd, 1, 10000), ==, 1);
      g_assert_cmpint (nbdc_tls_flush (t), ==, 0);
    }
  }
  g_test_message ("%u of %u sends found no room, %u of those took 150 ms "
                  "or more; buffers at most %zu KiB", eagain, calls, slow,
                  nbdc_tls_buffered_high_water (t) >> 10);
  /* (A build slow enough that the echo keeps up finds room every time:
   * nothing to count then, and nothing waited.) */
  g_assert_cmpuint (slow, <=, eagain / 2);
  g_assert_cmpuint (nbdc_tls_buffered_high_water (t), <=,
                    NBDC_TLS_BUFFER_MAX);
  finish (&s, thread, t, fd);
  g_assert_cmpuint (s.echoed, ==, total);
}

/* shutdown wakes a reader blocked in recv. */
static gpointer
blocked_reader (gpointer data)
{
  NbdTransport *t = data;
  char c;
  ssize_t r = t->ops->recv (t, &c, 1);
  return GINT_TO_POINTER (r <= 0 ? 1 : 0);
}

static void
test_shutdown_wakes_reader (void)
{
  Server s = { .cert_dir = pki, .echo = TRUE };
  NbdcTlsConfig cfg = { .certificates = pki };
  g_autoptr (GError) error = NULL;
  GThread *thread;
  int fd;
  NbdTransport *t = start (&s, &cfg, "localhost", &thread, &fd, &error);
  g_assert_no_error (error);
  GThread *rd = g_thread_new ("reader", blocked_reader, t);
  g_usleep (100000);
  t->ops->shutdown (t);
  t->ops->shutdown (t);   /* idempotent */
  g_assert_cmpint (GPOINTER_TO_INT (g_thread_join (rd)), ==, 1);
  finish (&s, thread, t, fd);
}

typedef struct {
  NbdTransport *t;
  gint done;                  /* atomic */
  gboolean timed_out;
  char *message;
} DeadlineRead;

static gpointer
deadline_reader (gpointer data)
{
  DeadlineRead *d = data;
  GError *error = NULL;
  char buf[4];
  gboolean ok = nbdc_read_full (d->t, buf, sizeof buf,
                                g_get_monotonic_time () + 300000,
                                "reading an option reply", &error);
  d->timed_out = !ok && g_error_matches (error, NBDFS_ERROR,
                                         NBDFS_ERROR_TIMEOUT);
  d->message = error ? g_strdup (error->message) : NULL;
  g_clear_error (&error);
  g_atomic_int_set (&d->done, 1);
  return NULL;
}

typedef struct {
  NbdTransport *t;
  gint done;                  /* atomic */
  gboolean timed_out;
  double secs;
  double sendv_secs;          /* the longest sendv call */
  int sendv_eagain;
  char *message;
} DeadlineWrite;

/* 16 MiB with a 500 ms deadline. */
static gpointer
deadline_writer (gpointer data)
{
  DeadlineWrite *d = data;
  GError *error = NULL;
  const size_t len = 16 * 1024 * 1024;
  g_autofree char *buf = g_malloc0 (len);
  gint64 t0 = g_get_monotonic_time ();
  gboolean ok = nbdc_write_full (d->t, buf, len, t0 + 500000,
                                 "sending an option", &error);
  d->secs = (g_get_monotonic_time () - t0) / 1e6;
  d->timed_out = !ok && g_error_matches (error, NBDFS_ERROR,
                                         NBDFS_ERROR_TIMEOUT);
  d->message = error ? g_strdup (error->message) : NULL;
  g_clear_error (&error);
  /* What conn.c's sender does: sendv straight away, no poll first. Each
   * call returns (EAGAIN once nothing moves) within a bounded time. */
  for (int i = 0; i < 3; i++) {
    struct iovec iov = { buf, len };
    gint64 c0 = g_get_monotonic_time ();
    ssize_t w = d->t->ops->sendv (d->t, &iov, 1);
    d->sendv_secs = MAX (d->sendv_secs,
                         (g_get_monotonic_time () - c0) / 1e6);
    if (w < 0 && errno == EAGAIN)
      d->sendv_eagain++;
  }
  g_atomic_int_set (&d->done, 1);
  return NULL;
}

/* A server (or anyone on the path) sends part of a TLS record and stops:
 * the handshake deadline (and, in transmission, the request timeout) must
 * still fire; tls_recv must not wait for the rest of the record forever. */
static void
test_partial_record_deadline (void)
{
  Server s = { .cert_dir = pki, .partial_record = TRUE };
  NbdcTlsConfig cfg = { .certificates = pki };
  g_autoptr (GError) error = NULL;
  GThread *thread;
  int fd;
  NbdTransport *t = start (&s, &cfg, "localhost", &thread, &fd, &error);
  g_assert_no_error (error);
  DeadlineRead d = { .t = t };
  GThread *rd = g_thread_new ("reader", deadline_reader, &d);
  /* Bounded: a reader still stuck after 10 s is unstuck (shutdown wakes
   * it) so the test fails instead of hanging. */
  gint64 end = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
  while (!g_atomic_int_get (&d.done) && g_get_monotonic_time () < end)
    g_usleep (20000);
  gboolean stuck = !g_atomic_int_get (&d.done);
  if (stuck)
    t->ops->shutdown (t);
  g_thread_join (rd);
  g_test_message ("message: %s", d.message ? d.message : "(none)");
  g_free (d.message);
  g_assert_false (stuck);
  g_assert_true (d.timed_out);
  finish (&s, thread, t, fd);
}

/* A server that keeps sending records without data (session tickets
 * here) must not keep a reader past its deadline either. */
static void
test_trickle_deadline (void)
{
  Server s = { .cert_dir = pki, .trickle = TRUE };
  NbdcTlsConfig cfg = { .certificates = pki };
  g_autoptr (GError) error = NULL;
  GThread *thread;
  int fd;
  NbdTransport *t = start (&s, &cfg, "localhost", &thread, &fd, &error);
  g_assert_no_error (error);
  DeadlineRead d = { .t = t };
  GThread *rd = g_thread_new ("reader", deadline_reader, &d);
  gint64 end = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
  while (!g_atomic_int_get (&d.done) && g_get_monotonic_time () < end)
    g_usleep (20000);
  gboolean stuck = !g_atomic_int_get (&d.done);
  if (stuck)
    t->ops->shutdown (t);
  g_thread_join (rd);
  g_test_message ("message: %s", d.message ? d.message : "(none)");
  g_free (d.message);
  g_assert_false (stuck);
  g_assert_true (d.timed_out);
  finish (&s, thread, t, fd);
}

/* ---- hostile servers against an NBD connection (conn.c over TLS) ---- */

/* How much the process may grow while a hostile server floods it: its
 * TLS buffers are bounded far below this (the old code grew by the whole
 * flood). ASan's quarantine keeps freed memory resident, so more there. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_GROWTH_MAX_KIB (128 * 1024)
#else
#define RSS_GROWTH_MAX_KIB (48 * 1024)
#endif

/* Resident memory of this process, in KiB (/proc/self/status VmRSS). */
static long
rss_kib (void)
{
  g_autofree char *status = NULL;
  if (!g_file_get_contents ("/proc/self/status", &status, NULL, NULL))
    return -1;
  const char *v = strstr (status, "VmRSS:");
  return v ? strtol (v + 6, NULL, 10) : -1;
}

typedef struct {
  GMutex lock;
  GCond cond;
  gboolean done;
  int err;
} Done;

static void
done_cb (void *opaque, int err)
{
  Done *d = opaque;
  g_mutex_lock (&d->lock);
  d->done = TRUE;
  d->err = err;
  g_cond_broadcast (&d->cond);
  g_mutex_unlock (&d->lock);
}

#define HOSTILE_TIMEOUT 2         /* --timeout, seconds */
#define HOSTILE_WRITE (32 * 1024 * 1024)

/* A 32 MiB WRITE to a server that completed the handshake and then
 * misbehaves (mode): the WRITE must fail within the request timeout (plus
 * a margin), and our memory must not follow what the server sends. */
static void
hostile_write (int mode)
{
  Server s = { .cert_dir = pki, .hostile = mode };
  NbdcTlsConfig cfg = { .certificates = pki };
  g_autoptr (GError) error = NULL;
  GThread *thread;
  int fd;
  NbdTransport *t = start (&s, &cfg, "localhost", &thread, &fd, &error);
  g_assert_no_error (error);

  /* conn.c warns when it drops the connection: expected here. */
  GLogLevelFlags fatal = g_log_set_always_fatal (G_LOG_FATAL_MASK
                                                 | G_LOG_LEVEL_CRITICAL);
  g_autofree guint8 *data = g_malloc (HOSTILE_WRITE);
  memset (data, 'w', HOSTILE_WRITE);
  long rss0 = rss_kib ();
  NbdExport exp = {
    .size = G_GUINT64_CONSTANT (1) << 30, .min_block = 1, .pref_block = 4096,
    .max_block = HOSTILE_WRITE, .tls = TRUE,
    .eflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH,
  };
  NbdcConnConfig ccfg = { .request_timeout = HOSTILE_TIMEOUT,
                          .name = "hostile" };
  NbdConn *conn = nbdc_conn_new (t, &exp, &ccfg);
  Done d = { 0 };
  NbdcCmd cmd = { .type = NBD_CMD_WRITE, .offset = 0,
                  .count = HOSTILE_WRITE, .buf = data, .done = done_cb,
                  .opaque = &d };
  gint64 t0 = g_get_monotonic_time ();
  nbdc_conn_submit (conn, &cmd);

  /* Bounded: a connection still stuck after 15 s is unstuck (the
   * transport shutdown wakes a sender in poll) so the test fails
   * instead of hanging. */
  gint64 end = t0 + 15 * G_USEC_PER_SEC;
  long rss_max = rss0;
  g_mutex_lock (&d.lock);
  while (!d.done && g_get_monotonic_time () < end) {
    g_cond_wait_until (&d.cond, &d.lock, g_get_monotonic_time () + 50000);
    g_mutex_unlock (&d.lock);
    rss_max = MAX (rss_max, rss_kib ());
    g_mutex_lock (&d.lock);
  }
  gboolean stuck = !d.done;
  int err = d.err;
  g_mutex_unlock (&d.lock);
  double secs = (g_get_monotonic_time () - t0) / 1e6;
  size_t high = stuck ? 0 : nbdc_tls_buffered_high_water (t);
  if (stuck)
    nbdc_conn_kill (conn, "test: stuck");
  g_atomic_int_set (&s.release, 1);
  nbdc_conn_free (conn);
  g_thread_join (thread);
  close (s.fd);
  g_log_set_always_fatal (fatal);
  g_test_message ("WRITE ended after %.2f s (%s), err %d; RSS %ld -> max "
                  "%ld KiB (+%ld); TLS buffers at most %zu KiB; server "
                  "flooded %" G_GUINT64_FORMAT " KiB", secs,
                  stuck ? "stuck" : "done", err, rss0, rss_max,
                  rss_max - rss0, high >> 10, s.flooded >> 10);
  g_assert_false (stuck);
  g_assert_cmpint (err, ==, EIO);
  g_assert_cmpfloat (secs, <, HOSTILE_TIMEOUT + 3);
  /* The flood is up to 192 MiB; our buffers are a few hundred KiB. */
  g_assert_cmpint (rss_max - rss0, <, RSS_GROWTH_MAX_KIB);
  g_assert_cmpuint (high, <=, NBDC_TLS_BUFFER_MAX);
}

static void
test_hostile_stall (void)
{
  hostile_write (HOSTILE_STALL);
}

static void
test_hostile_header_byte (void)
{
  hostile_write (HOSTILE_HEADER_BYTE);
}

static void
test_hostile_junk (void)
{
  hostile_write (HOSTILE_JUNK);
}

static void
test_hostile_tickets (void)
{
  hostile_write (HOSTILE_TICKETS);
}

/* The transport alone: a send to a server that reads nothing gives up
 * (EAGAIN) after a moment, so that callers can keep their deadlines:
 * nbdc_write_full (the handshake's writes) times out on time. */
static void
test_send_deadline (void)
{
  Server s = { .cert_dir = pki, .hostile = HOSTILE_STALL };
  NbdcTlsConfig cfg = { .certificates = pki };
  g_autoptr (GError) error = NULL;
  GThread *thread;
  int fd;
  NbdTransport *t = start (&s, &cfg, "localhost", &thread, &fd, &error);
  g_assert_no_error (error);
  DeadlineWrite d = { .t = t };
  GThread *wr = g_thread_new ("writer", deadline_writer, &d);
  gint64 end = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
  while (!g_atomic_int_get (&d.done) && g_get_monotonic_time () < end)
    g_usleep (20000);
  gboolean stuck = !g_atomic_int_get (&d.done);
  if (stuck)
    t->ops->shutdown (t);
  g_thread_join (wr);
  g_test_message ("message: %s after %.2f s; sendv: %d x EAGAIN, the "
                  "longest call %.2f s", d.message ? d.message : "(none)",
                  d.secs, d.sendv_eagain, d.sendv_secs);
  g_free (d.message);
  g_assert_false (stuck);
  g_assert_true (d.timed_out);
  g_assert_cmpfloat (d.secs, <, 1.5);
  g_assert_cmpint (d.sendv_eagain, >=, 1);
  g_assert_cmpfloat (d.sendv_secs, <, 1);
  g_atomic_int_set (&s.release, 1);
  finish (&s, thread, t, fd);
}

/* ---- the kernel-mode relay (kernelattach/relay.c), on the host ---- */

#define RELAY_BYTES (32 * 1024 * 1024)

static gpointer
relay_writer (gpointer data)
{
  int fd = GPOINTER_TO_INT (data);
  static guint8 buf[1 << 20];
  for (guint64 off = 0; off < RELAY_BYTES; off += sizeof buf) {
    for (size_t i = 0; i < sizeof buf; i++)
      buf[i] = pattern_byte (off + i);
    for (size_t done = 0; done < sizeof buf;) {
      ssize_t w = write (fd, buf + done, sizeof buf - done);
      g_assert_cmpint (w, >, 0);
      done += w;
    }
  }
  return NULL;
}

/* What the kernel would see: bytes written to its end of the socketpair
 * reach the (echo) server through TLS, the answers come back in order;
 * the kernel closing its end ends the relayed connection; a server that
 * goes away shows as EOF on the kernel's end. */
static void
test_relay (void)
{
  Server s = { .cert_dir = pki, .echo = TRUE, .key_updates = TRUE };
  NbdcTlsConfig cfg = { .certificates = pki };
  g_autoptr (GError) error = NULL;
  GThread *thread;
  int fd;
  NbdTransport *t = start (&s, &cfg, "localhost", &thread, &fd, &error);
  g_assert_no_error (error);
  int kfd = nbdk_relay_add (t, &error);
  g_assert_no_error (error);
  g_assert_cmpint (kfd, >=, 0);
  g_assert_true (nbdk_relay_active ());
  nbdk_relay_start ();

  gint64 t0 = g_get_monotonic_time ();
  GThread *wr = g_thread_new ("kernel-writer", relay_writer,
                              GINT_TO_POINTER (kfd));
  static guint8 buf[65536];
  guint64 off = 0;
  while (off < RELAY_BYTES) {
    ssize_t n = read (kfd, buf, sizeof buf);
    g_assert_cmpint (n, >, 0);
    for (ssize_t i = 0; i < n; i++)
      if (buf[i] != pattern_byte (off + i))
        g_error ("relayed byte %" G_GUINT64_FORMAT " differs", off + i);
    off += n;
  }
  g_thread_join (wr);
  gint64 us = g_get_monotonic_time () - t0;
  g_test_message ("relayed %d MiB each way in %.2f s (%.0f MiB/s), "
                  "%d key updates", RELAY_BYTES >> 20, us / 1e6,
                  (RELAY_BYTES >> 20) / (us / 1e6), s.key_updates_done);

  /* The kernel closes its end: the relay closes the TLS session. */
  close (kfd);
  nbdk_relay_wait_idle ();
  g_assert_false (nbdk_relay_active ());
  g_thread_join (thread);   /* the echo server saw the end of the session */
  g_assert_cmpuint (s.echoed, ==, RELAY_BYTES);
  close (s.fd);

  /* The server goes away: the kernel's end reads EOF. */
  Server s2 = { .cert_dir = pki };
  t = start (&s2, &cfg, "localhost", &thread, &fd, &error);
  g_assert_no_error (error);
  kfd = nbdk_relay_add (t, &error);
  g_assert_no_error (error);
  g_thread_join (thread);   /* no echo: the server shuts its end at once */
  char c;
  g_assert_cmpint (read (kfd, &c, 1), ==, 0);
  nbdk_relay_wait_idle ();
  close (kfd);
  close (s2.fd);
  nbdk_relay_stop ();
}

/* The kernel writing to a hostile server's connection, until the test
 * shuts its end. */
static gpointer
stuck_writer (gpointer data)
{
  int fd = GPOINTER_TO_INT (data);
  static guint8 buf[1 << 20];
  guint64 total = 0;
  while (total < 64 * 1024 * 1024) {
    ssize_t w = send (fd, buf, sizeof buf, MSG_NOSIGNAL);
    if (w <= 0)
      break;
    total += w;
  }
  return NULL;
}

static gpointer
echo_writer (gpointer data)
{
  int fd = GPOINTER_TO_INT (data);
  static guint8 buf[1 << 16];
  for (guint64 off = 0; off < 4 * 1024 * 1024; off += sizeof buf) {
    for (size_t i = 0; i < sizeof buf; i++)
      buf[i] = pattern_byte (off + i);
    if (send (fd, buf, sizeof buf, MSG_NOSIGNAL) != sizeof buf)
      break;
  }
  return NULL;
}

/* One relay thread, two connections: A's server misbehaves (mode) while
 * the kernel writes to it without end; B's server echoes. B must keep
 * working at full speed (one stalled or flooding server must not stall
 * the relay loop), and the relay's memory stays bounded. */
static void
relay_hostile (int mode)
{
  Server sa = { .cert_dir = pki, .hostile = mode };
  Server sb = { .cert_dir = pki, .echo = TRUE };
  NbdcTlsConfig cfg = { .certificates = pki };
  g_autoptr (GError) error = NULL;
  GThread *tha, *thb;
  int fda, fdb;
  NbdTransport *ta = start (&sa, &cfg, "localhost", &tha, &fda, &error);
  g_assert_no_error (error);
  NbdTransport *tb = start (&sb, &cfg, "localhost", &thb, &fdb, &error);
  g_assert_no_error (error);
  int ka = nbdk_relay_add (ta, &error);
  g_assert_no_error (error);
  int kb = nbdk_relay_add (tb, &error);
  g_assert_no_error (error);
  long rss0 = rss_kib ();
  nbdk_relay_start ();

  GThread *wa = g_thread_new ("kernel-a", stuck_writer, GINT_TO_POINTER (ka));
  g_usleep (500000);          /* A's socket and buffers are full now */
  gint64 t0 = g_get_monotonic_time ();
  GThread *wb = g_thread_new ("kernel-b", echo_writer, GINT_TO_POINTER (kb));
  static guint8 buf[65536];
  guint64 off = 0;
  gboolean late = FALSE;
  while (off < 4 * 1024 * 1024) {
    struct pollfd pfd = { .fd = kb, .events = POLLIN };
    gint64 left = t0 + 10 * G_USEC_PER_SEC - g_get_monotonic_time ();
    if (left <= 0 || poll (&pfd, 1, (int) (left / 1000)) <= 0) {
      late = TRUE;
      break;
    }
    ssize_t n = read (kb, buf, sizeof buf);
    g_assert_cmpint (n, >, 0);
    for (ssize_t i = 0; i < n; i++)
      if (buf[i] != pattern_byte (off + i))
        g_error ("relayed byte %" G_GUINT64_FORMAT " differs", off + i);
    off += n;
  }
  double secs = (g_get_monotonic_time () - t0) / 1e6;
  long rss1 = rss_kib ();
  g_test_message ("B echoed %" G_GUINT64_FORMAT " KiB in %.2f s while A's "
                  "server %s; RSS %ld -> %ld KiB; A's flood %" G_GUINT64_FORMAT
                  " KiB", off >> 10, secs,
                  mode == HOSTILE_STALL ? "reads nothing" : "floods",
                  rss0, rss1, sa.flooded >> 10);

  /* The kernel gives up on A (its request timeout): the relay drops it. */
  shutdown (ka, SHUT_RDWR);
  g_thread_join (wa);
  g_atomic_int_set (&sa.release, 1);
  g_thread_join (tha);
  close (ka);
  g_thread_join (wb);
  shutdown (kb, SHUT_RDWR);
  close (kb);
  nbdk_relay_wait_idle ();
  g_thread_join (thb);
  close (sa.fd);
  close (sb.fd);
  nbdk_relay_stop ();

  g_assert_false (late);
  g_assert_cmpfloat (secs, <, 5);
  g_assert_cmpint (rss1 - rss0, <, RSS_GROWTH_MAX_KIB);
}

static void
test_relay_stalled_server (void)
{
  relay_hostile (HOSTILE_STALL);
}

static void
test_relay_flooding_server (void)
{
  relay_hostile (HOSTILE_TICKETS);
}

/* URI query parameters fill what the command line left unset; the
 * command line wins; tls-type is checked and chooses the method. */
static void
test_merge_uri (void)
{
  NbdAddress addr = { .tls_verify_peer = -1 };
  NbdcTlsConfig cfg = { 0 };
  g_autoptr (GError) error = NULL;

  addr.tls_certificates = g_strdup ("/uri/pki");
  addr.tls_hostname = g_strdup ("uri.example");
  addr.tls_username = g_strdup ("alice");
  cfg.hostname = g_strdup ("cli.example");
  g_assert_true (nbdc_tls_config_merge_uri (&cfg, &addr, &error));
  g_assert_cmpstr (cfg.certificates, ==, "/uri/pki");
  g_assert_cmpstr (cfg.hostname, ==, "cli.example");
  g_assert_cmpstr (cfg.username, ==, "alice");
  g_assert_false (cfg.no_verify);
  nbdc_tls_config_clear (&cfg);
  nbdc_address_clear (&addr);

  /* tls-verify-peer=0 */
  NbdAddress a2 = { .tls_verify_peer = 0 };
  NbdcTlsConfig c2 = { 0 };
  g_assert_true (nbdc_tls_config_merge_uri (&c2, &a2, &error));
  g_assert_true (c2.no_verify);

  /* psk without a key file; both methods at once; an unknown type */
  NbdAddress a3 = { .tls_verify_peer = -1, .tls_type = (char *) "psk" };
  NbdcTlsConfig c3 = { 0 };
  g_assert_false (nbdc_tls_config_merge_uri (&c3, &a3, &error));
  g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE);
  g_clear_error (&error);
  nbdc_tls_config_clear (&c3);
  NbdAddress a4 = { .tls_verify_peer = -1,
                    .tls_psk_file = (char *) "/k.psk" };
  NbdcTlsConfig c4 = { .certificates = g_strdup ("/pki") };
  g_assert_false (nbdc_tls_config_merge_uri (&c4, &a4, &error));
  g_assert_true (strstr (error->message, "not both") != NULL);
  g_clear_error (&error);
  nbdc_tls_config_clear (&c4);
  NbdAddress a5 = { .tls_verify_peer = -1, .tls_type = (char *) "srp" };
  NbdcTlsConfig c5 = { 0 };
  g_assert_false (nbdc_tls_config_merge_uri (&c5, &a5, &error));
  g_assert_true (strstr (error->message, "tls-type=srp") != NULL);
  g_clear_error (&error);

  /* copy carries every field */
  NbdcTlsConfig src = { .certificates = (char *) "d", .psk_file = (char *) "f",
                        .username = (char *) "u", .hostname = (char *) "h",
                        .type = (char *) "psk", .no_verify = TRUE };
  NbdcTlsConfig dst = { 0 };
  nbdc_tls_config_copy (&dst, &src);
  g_assert_cmpstr (dst.type, ==, "psk");
  g_assert_cmpstr (dst.username, ==, "u");
  g_assert_true (dst.no_verify);
  nbdc_tls_config_clear (&dst);
}

static void
setup_pki (void)
{
  const char *srcdir = g_getenv ("SRCDIR");
  g_autofree char *script = NULL, *psk_script = NULL;
  g_autoptr (GError) error = NULL;
  int status;

  pki = g_dir_make_tmp ("nbdfs-tls-unit-XXXXXX", &error);
  g_assert_no_error (error);
  script = g_build_filename (srcdir ? srcdir : ".", "scripts", "make-pki.sh",
                             NULL);
  psk_script = g_build_filename (srcdir ? srcdir : ".", "scripts",
                                 "make-psk.sh", NULL);
  psk_file = g_build_filename (pki, "keys.psk", NULL);
  wrong_psk = g_build_filename (pki, "wrong.psk", NULL);
  const char *argv1[] = { "bash", script, pki, NULL };
  const char *argv2[] = { "bash", psk_script, psk_file, "alice", NULL };
  const char *argv3[] = { "bash", psk_script, wrong_psk, "alice", NULL };
  const char *argv4[] = { "bash", psk_script, wrong_psk, "mallory", NULL };
  const char **argvs[] = { argv1, argv2, argv3, argv4 };
  for (size_t i = 0; i < G_N_ELEMENTS (argvs); i++) {
    if (!g_spawn_sync (NULL, (char **) argvs[i], NULL, G_SPAWN_SEARCH_PATH,
                       NULL, NULL, NULL, NULL, &status, &error)
        || !g_spawn_check_wait_status (status, &error))
      g_error ("%s: %s", argvs[i][1], error->message);
  }
}

static void
cleanup_pki (void)
{
  g_autofree char *cmd = g_strdup_printf ("rm -rf '%s'", pki);
  (void) !system (cmd);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_autofree char *certtool = g_find_program_in_path ("certtool");
  g_autofree char *psktool = g_find_program_in_path ("psktool");
  if (certtool == NULL || psktool == NULL) {
    /* Under CI the runner turns this skip into a failure. */
    g_test_add_func ("/nbdclient/tls/skip", NULL);
    g_test_skip ("certtool/psktool missing: apt-get install gnutls-bin");
    return g_test_run ();
  }
  setup_pki ();
  g_test_add_func ("/nbdclient/tls/merge-uri", test_merge_uri);
  g_test_add_func ("/kernelattach/relay", test_relay);
  g_test_add_func ("/kernelattach/relay-stalled-server",
                   test_relay_stalled_server);
  g_test_add_func ("/kernelattach/relay-flooding-server",
                   test_relay_flooding_server);
  g_test_add_func ("/nbdclient/tls/x509-ok", test_x509_ok);
  g_test_add_func ("/nbdclient/tls/ip-literal", test_ip_literal);
  g_test_add_func ("/nbdclient/tls/unknown-ca", test_unknown_ca);
  g_test_add_func ("/nbdclient/tls/self-signed", test_self_signed);
  g_test_add_func ("/nbdclient/tls/name-mismatch", test_name_mismatch);
  g_test_add_func ("/nbdclient/tls/expired", test_expired);
  g_test_add_func ("/nbdclient/tls/no-verify", test_no_verify);
  g_test_add_func ("/nbdclient/tls/client-cert-missing",
                   test_client_cert_missing);
  g_test_add_func ("/nbdclient/tls/missing-ca-file", test_missing_ca_file);
  g_test_add_func ("/nbdclient/tls/psk-ok", test_psk_ok);
  g_test_add_func ("/nbdclient/tls/psk-wrong-key", test_psk_wrong_key);
  g_test_add_func ("/nbdclient/tls/psk-file-wiped", test_psk_file_wiped);
  g_test_add_func ("/nbdclient/tls/unix-needs-hostname",
                   test_unix_needs_hostname);
  g_test_add_func ("/nbdclient/tls/psk-unknown-user", test_psk_unknown_user);
  g_test_add_func ("/nbdclient/tls/deadline", test_deadline);
  g_test_add_func ("/nbdclient/tls/not-tls", test_not_tls);
  g_test_add_func ("/nbdclient/tls/two-threads-key-update",
                   test_two_threads_key_update);
  g_test_add_func ("/nbdclient/tls/single-thread-no-deadlock",
                   test_single_thread_no_deadlock);
  g_test_add_func ("/nbdclient/tls/shutdown-wakes-reader",
                   test_shutdown_wakes_reader);
  g_test_add_func ("/nbdclient/tls/partial-record-deadline",
                   test_partial_record_deadline);
  g_test_add_func ("/nbdclient/tls/trickle-deadline", test_trickle_deadline);
  g_test_add_func ("/nbdclient/tls/send-deadline", test_send_deadline);
  g_test_add_func ("/nbdclient/tls/hostile-stall", test_hostile_stall);
  g_test_add_func ("/nbdclient/tls/hostile-header-byte",
                   test_hostile_header_byte);
  g_test_add_func ("/nbdclient/tls/hostile-junk", test_hostile_junk);
  g_test_add_func ("/nbdclient/tls/hostile-tickets", test_hostile_tickets);
  int r = g_test_run ();
  cleanup_pki ();
  return r;
}
