/* TEMPORARY: placeholder until tls.c lands (delete this file then). */
#include "nbdclient/error.h"
#include "nbdclient/tls.h"

NbdTransport *
nbdc_tls_start (int fd, const NbdcTlsConfig *cfg, const char *hostname,
                gint64 deadline, GError **error)
{
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_TLS,
               "TLS support is not built yet");
  return NULL;
}

void
nbdc_tls_config_clear (NbdcTlsConfig *cfg)
{
  g_clear_pointer (&cfg->certificates, g_free);
  g_clear_pointer (&cfg->psk_file, g_free);
  g_clear_pointer (&cfg->username, g_free);
  g_clear_pointer (&cfg->hostname, g_free);
}

void
nbdc_tls_config_copy (NbdcTlsConfig *dst, const NbdcTlsConfig *src)
{
  dst->certificates = g_strdup (src->certificates);
  dst->psk_file = g_strdup (src->psk_file);
  dst->username = g_strdup (src->username);
  dst->hostname = g_strdup (src->hostname);
  dst->no_verify = src->no_verify;
}
