/* nbdfs — option haggling primitives ("Fixed newstyle negotiation"): send
 * an option, receive one checked reply, and turn NBD_REP_ERR_* into a
 * sentence (cf. libnbd CHECK_REPLY, qemu nbd_handle_reply_err). */
#include <string.h>

#include "nbdclient/error.h"
#include "nbdclient/handshake.h"
#include "nbdclient/names.h"
#include "nbdclient/protocol.h"

void
nbdc_reply_clear (NbdcReply *r)
{
  g_clear_pointer (&r->data, g_free);
  r->len = 0;
}

gboolean
nbdc_send_option (NbdcHandshake *h, uint32_t opt, const void *data,
                  uint32_t len, GError **error)
{
  struct nbd_new_option hdr = {
    .version = GUINT64_TO_BE (NBD_NEWSTYLE_MAGIC),
    .option = GUINT32_TO_BE (opt),
    .optlen = GUINT32_TO_BE (len),
  };
  g_autofree char *what = g_strdup_printf ("sending option %u (%s)", opt,
                                           nbdc_opt_name (opt));
  g_debug ("option %u (%s), %u bytes of data", opt, nbdc_opt_name (opt), len);
  /* One buffer so the option goes out in one segment. */
  g_autofree char *buf = g_malloc (sizeof hdr + len);
  memcpy (buf, &hdr, sizeof hdr);
  if (len)
    memcpy (buf + sizeof hdr, data, len);
  return nbdc_write_full (h->t, buf, sizeof hdr + len, h->deadline,
                          what, error);
}

gboolean
nbdc_receive_reply (NbdcHandshake *h, uint32_t opt, NbdcReply *r,
                    GError **error)
{
  struct nbd_fixed_new_option_reply hdr;
  g_autofree char *what = g_strdup_printf ("reading the reply to option "
                                           "%u (%s)", opt,
                                           nbdc_opt_name (opt));
  memset (r, 0, sizeof *r);
  if (!nbdc_read_full (h->t, &hdr, sizeof hdr, h->deadline, what, error))
    return FALSE;
  uint64_t magic = GUINT64_FROM_BE (hdr.magic);
  r->option = GUINT32_FROM_BE (hdr.option);
  r->type = GUINT32_FROM_BE (hdr.reply);
  r->len = GUINT32_FROM_BE (hdr.replylen);
  if (magic != NBD_OPT_REPLY_MAGIC) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                 "bad option reply magic 0x%" G_GINT64_MODIFIER "x (expected "
                 "0x%" G_GINT64_MODIFIER "x) in the reply to option %u (%s)",
                 (guint64) magic, (guint64) NBD_OPT_REPLY_MAGIC, opt,
                 nbdc_opt_name (opt));
    return FALSE;
  }
  if (r->option != opt) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                 "the server answered option %u (%s) with a reply for option "
                 "%u (%s)", opt, nbdc_opt_name (opt), r->option,
                 nbdc_opt_name (r->option));
    return FALSE;
  }
  g_debug ("option %u (%s) -> reply 0x%x (%s), %u bytes", opt,
           nbdc_opt_name (opt), r->type, nbdc_rep_name (r->type), r->len);
  if (r->len > NBD_MAX_OPTION_REPLY) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                 "the server's reply 0x%x (%s) to option %u (%s) is %u "
                 "bytes long, more than the %u we accept", r->type,
                 nbdc_rep_name (r->type), opt, nbdc_opt_name (opt), r->len,
                 (unsigned) NBD_MAX_OPTION_REPLY);
    return FALSE;
  }
  r->data = g_malloc (r->len + 1);
  r->data[r->len] = '\0';
  if (r->len && !nbdc_read_full (h->t, r->data, r->len, h->deadline, what,
                                 error)) {
    nbdc_reply_clear (r);
    return FALSE;
  }
  return TRUE;
}

void
nbdc_set_unexpected_reply (GError **error, const NbdcReply *r)
{
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
               "unexpected reply 0x%x (%s) of %u bytes to option %u (%s)",
               r->type, nbdc_rep_name (r->type), r->len, r->option,
               nbdc_opt_name (r->option));
}

void
nbdc_set_reply_error (GError **error, const NbdcReply *r, const char *export)
{
  const char *opt = nbdc_opt_name (r->option);
  g_autofree char *name = export
    ? nbdc_escape_text (export, strlen (export), 256) : NULL;
  g_autofree char *msg = NULL;
  int code = NBDFS_ERROR_REFUSED;

  switch (r->type) {
  case NBD_REP_ERR_UNSUP:
    code = NBDFS_ERROR_UNSUPPORTED;
    msg = g_strdup_printf ("the server does not support option %u (%s)",
                           r->option, opt);
    break;
  case NBD_REP_ERR_POLICY:
    msg = (r->option == NBD_OPT_GO || r->option == NBD_OPT_INFO) && name
      ? g_strdup_printf ("the server's policy does not allow access to "
                         "export \"%s\"", name)
      : g_strdup_printf ("the server's policy does not allow option %u (%s)",
                         r->option, opt);
    break;
  case NBD_REP_ERR_INVALID:
    msg = g_strdup_printf ("the server says option %u (%s) was invalid",
                           r->option, opt);
    break;
  case NBD_REP_ERR_PLATFORM:
    code = NBDFS_ERROR_UNSUPPORTED;
    msg = g_strdup_printf ("option %u (%s) is not supported on the server's "
                           "platform", r->option, opt);
    break;
  case NBD_REP_ERR_TLS_REQD:
    code = NBDFS_ERROR_TLS_REQUIRED;
    msg = g_strdup ("the server requires TLS: use nbds:// or --tls=require");
    break;
  case NBD_REP_ERR_UNKNOWN:
    code = NBDFS_ERROR_NO_SUCH_EXPORT;
    msg = g_strdup_printf ("the server has no export named \"%s\"",
                           name ? name : "");
    break;
  case NBD_REP_ERR_SHUTDOWN:
    msg = g_strdup ("the server is shutting down");
    break;
  case NBD_REP_ERR_BLOCK_SIZE_REQD:
    msg = g_strdup ("the server requires block size negotiation");
    break;
  case NBD_REP_ERR_TOO_BIG:
    msg = g_strdup_printf ("the server says option %u (%s) or its reply is "
                           "too big", r->option, opt);
    break;
  case NBD_REP_ERR_EXT_HEADER_REQD:
    code = NBDFS_ERROR_UNSUPPORTED;
    msg = g_strdup ("the server requires extended headers "
                    "(NBD_OPT_EXTENDED_HEADERS), which this connection does "
                    "not use");
    break;
  default:
    msg = g_strdup_printf ("the server failed option %u (%s) with unknown "
                           "error 0x%x", r->option, opt, r->type);
    break;
  }
  if (r->len > 0 && r->data) {
    g_autofree char *text = nbdc_escape_text (r->data, r->len, 512);
    g_set_error (error, NBDFS_ERROR, code, "%s (server reported: %s)",
                 msg, text);
  }
  else
    g_set_error_literal (error, NBDFS_ERROR, code, msg);
}
