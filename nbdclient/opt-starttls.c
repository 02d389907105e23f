/* nbdfs — NBD_OPT_STARTTLS (nbd-proto.md "TLS support", "Client-side
 * requirements", "Protocol downgrade attacks"). Sent as the first option so
 * everything after it is encrypted. */
#include <string.h>
#include <unistd.h>

#include "nbdclient/error.h"
#include "nbdclient/handshake.h"
#include "nbdclient/names.h"
#include "nbdclient/protocol.h"
#include "nbdclient/tls.h"

gboolean
nbdc_opt_starttls (NbdcHandshake *h, const NbdcOptions *opts, GError **error)
{
  NbdcReply r;
  if (!nbdc_send_option (h, NBD_OPT_STARTTLS, NULL, 0, error)
      || !nbdc_receive_reply (h, NBD_OPT_STARTTLS, &r, error))
    return FALSE;

  if (r.type != NBD_REP_ACK) {
    gboolean is_err = (r.type & NBD_REP_FLAG_ERROR) != 0;
    if (!is_err) {
      nbdc_set_unexpected_reply (error, &r);
      nbdc_reply_clear (&r);
      return FALSE;
    }
    if (nbdc_tls_mode (opts) == NBDC_TLS_REQUIRE) {
      /* The client "SHOULD terminate the session if the NBD_OPT_STARTTLS
       * replies with an error": a MitM could have forged it. */
      g_autofree char *text = r.len
        ? nbdc_escape_text (r.data, r.len, 512) : NULL;
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_TLS_REQUIRED,
                   "TLS is required but the server refused STARTTLS (%s)%s%s%s",
                   nbdc_rep_name (r.type), text ? " (server reported: " : "",
                   text ? text : "", text ? ")" : "");
      nbdc_reply_clear (&r);
      return FALSE;
    }
    g_debug ("server refused STARTTLS (%s): continuing without TLS",
             nbdc_rep_name (r.type));
    nbdc_reply_clear (&r);
    return TRUE;
  }
  if (r.len != 0) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                 "the server's ack to STARTTLS carries %u bytes of data", r.len);
    nbdc_reply_clear (&r);
    return FALSE;
  }
  nbdc_reply_clear (&r);

  /* Effective TLS settings: the command line wins, URI parameters fill in
   * (main.c merged them already; other callers may not have). */
  const NbdAddress *a = &opts->addr;
  NbdcTlsConfig cfg = { 0 };
  nbdc_tls_config_copy (&cfg, &opts->tls_config);
  if (!nbdc_tls_config_merge_uri (&cfg, a, error)) {
    nbdc_tls_config_clear (&cfg);
    return FALSE;
  }

  int fd = nbdc_transport_steal_fd (h->t);
  h->t = NULL;
  g_debug ("STARTTLS acknowledged: starting the TLS handshake");
  NbdTransport *t = nbdc_tls_start (fd, &cfg, a->host, h->deadline, error);
  nbdc_tls_config_clear (&cfg);
  if (t == NULL) {
    /* tls.h: on failure fd is still ours. */
    close (fd);
    return FALSE;
  }
  h->t = t;
  h->tls = TRUE;
  return TRUE;
}
