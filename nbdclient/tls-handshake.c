/* nbdfs — the TLS handshake after NBD_OPT_STARTTLS (nbd-proto.md "TLS
 * support"): credentials, priorities, verification, bounded by the
 * caller's deadline (nbdc_tls_start in tls.h).
 */
#include <errno.h>
#include <poll.h>
#include <string.h>

#include <gio/gio.h>
#include <gnutls/gnutls.h>

#include "nbdclient/error.h"
#include "nbdclient/tls-internal.h"

/* TLS 1.2 and 1.3 only ("Security considerations: TLS versions": MUST 1.2,
 * SHOULD later, older SHOULD NOT be on by default). */
#define PRIORITY_BASE "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
#define PRIORITY_PSK  PRIORITY_BASE ":+ECDHE-PSK:+DHE-PSK:+PSK"
#define PRIORITY_ANON PRIORITY_BASE ":+ANON-ECDH:+ANON-DH"

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
 * Under TLS 1.2 a server that only requests a certificate (gnutls
 * GNUTLS_CERT_REQUEST, as qemu-nbd does) completes the handshake too and
 * checks afterwards, then closes: so the wait is for either version, or the
 * refusal surfaces later as the next option's "Broken pipe".
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
  TlsPriv *p = tls_priv_new (fd, error);
  const char *priority;
  int r;

  if (p == NULL)
    return NULL;
  p->kind = tls_config_kind (cfg);
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
    if (!tls_setup_psk (p, cfg, error))
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
    if (!tls_setup_x509 (p, cfg, error))
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

  tls_priv_bind (p);
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
    tls_explain_failure (p, r, hostname, cfg, error);
    goto fail;
  }
  if (p->kind == AUTH_X509 && !p->have_client_cert
      && gnutls_certificate_client_get_request_status (p->session)
      && !await_verdict (p, deadline, error))
    goto fail;

  if (g_log_writer_default_would_drop (G_LOG_LEVEL_DEBUG, G_LOG_DOMAIN)
      == FALSE) {
    char *desc = gnutls_session_get_desc (p->session);
    g_debug ("TLS: handshake done: %s%s", desc ? desc : "?",
             gnutls_session_is_resumed (p->session) ? " (resumed)" : "");
    gnutls_free (desc);
  }

  return tls_priv_establish (p);

fail:
  tls_priv_free (p);
  return NULL;
}
