/* nbdfs — NBD_OPT_STRUCTURED_REPLY (nbd-proto.md "Option types"). ERR_UNSUP
 * (and other refusals) just mean simple replies; only ERR_TLS_REQD stops
 * the handshake, since nothing else will work either. */
#include "nbdclient/error.h"
#include "nbdclient/handshake.h"
#include "nbdclient/names.h"
#include "nbdclient/protocol.h"

gboolean
nbdc_opt_structured_reply (NbdcHandshake *h, NbdExport *exp, GError **error)
{
  NbdcReply r;
  if (!nbdc_send_option (h, NBD_OPT_STRUCTURED_REPLY, NULL, 0, error)
      || !nbdc_receive_reply (h, NBD_OPT_STRUCTURED_REPLY, &r, error))
    return FALSE;
  gboolean ok = TRUE;
  if (r.type == NBD_REP_ACK) {
    if (r.len != 0) {
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                   "the server's ack to structured reply carries %u bytes",
                   r.len);
      ok = FALSE;
    }
    else
      exp->structured = TRUE;
  }
  else if (r.type == NBD_REP_ERR_TLS_REQD) {
    nbdc_set_reply_error (error, &r, NULL);
    ok = FALSE;
  }
  else if (r.type & NBD_REP_FLAG_ERROR)
    g_debug ("no structured replies (%s)", nbdc_rep_name (r.type));
  else {
    nbdc_set_unexpected_reply (error, &r);
    ok = FALSE;
  }
  nbdc_reply_clear (&r);
  return ok;
}
