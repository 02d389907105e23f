/* nbdfs — why a TLS handshake failed, in one sentence: unknown CA, name
 * mismatch, expired, no client certificate, bad PSK, not TLS at all.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "nbdclient/error.h"
#include "nbdclient/tls-internal.h"

gboolean
tls_error (GError **error, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error_literal (error, NBDFS_ERROR, NBDFS_ERROR_TLS, msg);
  return FALSE;
}


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

void
tls_explain_failure (TlsPriv *p, int r, const char *hostname,
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
