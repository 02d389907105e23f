/* nbdfs — TLS credentials: X.509 from a certificates directory (or the
 * system trust store), PSK from a psktool file.
 */
#include <string.h>

#include <gnutls/gnutls.h>

#include "nbdclient/error.h"
#include "nbdclient/tls-internal.h"

gboolean
tls_setup_x509 (TlsPriv *p, const NbdcTlsConfig *cfg, GError **error)
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
gboolean
tls_setup_psk (TlsPriv *p, const NbdcTlsConfig *cfg, GError **error)
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

