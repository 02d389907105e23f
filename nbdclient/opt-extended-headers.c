/* nbdfs — NBD_OPT_EXTENDED_HEADERS, and the choice of reply mode it
 * starts: extended headers, else structured replies, else simple replies.
 *
 * The extension is specified on the spec's extension-ext-header branch
 * (doc/proto.md there, "NBD_OPT_EXTENDED_HEADERS"): once acked, every
 * request and reply has a 32-byte header with a 64-bit length, the option
 * "takes precedence over structured replies", and the client "MUST NOT
 * use NBD_OPT_EXPORT_NAME". We ask for it before anything that depends on
 * the reply mode (meta contexts) and, like every other option, after
 * NBD_OPT_STARTTLS: "If the client requests NBD_OPT_STARTTLS after this
 * option, it MUST renegotiate extended headers" never arises. */
#include "nbdclient/error.h"
#include "nbdclient/handshake.h"
#include "nbdclient/names.h"
#include "nbdclient/protocol.h"

/* Returns FALSE only for errors that end the handshake (I/O, a protocol
 * violation, ERR_TLS_REQD); any other refusal leaves exp->extended FALSE
 * ("clients SHOULD be prepared to also handle NBD_REP_ERR_UNSUP; in this
 * case, only the compact transmission headers will be used"). */
static gboolean
opt_extended_headers (NbdcHandshake *h, NbdExport *exp, GError **error)
{
  NbdcReply r;
  if (!nbdc_send_option (h, NBD_OPT_EXTENDED_HEADERS, NULL, 0, error)
      || !nbdc_receive_reply (h, NBD_OPT_EXTENDED_HEADERS, &r, error))
    return FALSE;
  gboolean ok = TRUE;
  if (r.type == NBD_REP_ACK) {
    if (r.len != 0) {
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                   "the server's ack to extended headers carries %u bytes",
                   r.len);
      ok = FALSE;
    }
    else {
      /* Extended replies are structured replies with a longer header:
       * chunks, errors with text, holes, block status all work. */
      exp->extended = TRUE;
      exp->structured = TRUE;
      h->extended = TRUE;
    }
  }
  else if (r.type == NBD_REP_ERR_TLS_REQD) {
    nbdc_set_reply_error (error, &r, NULL);
    ok = FALSE;
  }
  else if (r.type & NBD_REP_FLAG_ERROR) {
    g_debug ("no extended headers (%s)", nbdc_rep_name (r.type));
    h->ext_hint = "it refused NBD_OPT_EXTENDED_HEADERS";
  }
  else {
    nbdc_set_unexpected_reply (error, &r);
    ok = FALSE;
  }
  nbdc_reply_clear (&r);
  return ok;
}

gboolean
nbdc_opt_reply_mode (NbdcHandshake *h, const NbdcOptions *opts,
                     NbdExport *exp, GError **error)
{
  if (opts->no_structured) {
    h->ext_hint = "the kernel's nbd driver cannot parse extended replies: "
                  "use FUSE mode";
    return TRUE;
  }
  if (opts->no_extended)
    h->ext_hint = "leave out --no-extended-headers";
  else {
    if (!opt_extended_headers (h, exp, error))
      return FALSE;
    if (exp->extended)
      return TRUE;
  }
  return nbdc_opt_structured_reply (h, exp, error);
}

const char *
nbdc_reply_mode_name (const NbdExport *exp)
{
  if (exp->extended)
    return "extended headers";
  return exp->structured ? "structured replies" : "simple replies";
}
