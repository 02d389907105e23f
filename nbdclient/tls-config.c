/* nbdfs — the TLS configuration: what the command line and the URI's
 * query string say (tls.h), and which authentication that means.
 */
#include <string.h>

#include "nbdclient/error.h"
#include "nbdclient/tls-internal.h"

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
AuthKind
tls_config_kind (const NbdcTlsConfig *cfg)
{
  if (cfg->type && strcmp (cfg->type, "anon") == 0)
    return AUTH_ANON;
  if (cfg->type && strcmp (cfg->type, "psk") == 0)
    return AUTH_PSK;
  if (cfg->type && strcmp (cfg->type, "x509") == 0)
    return AUTH_X509;
  return cfg->psk_file ? AUTH_PSK : AUTH_X509;
}

