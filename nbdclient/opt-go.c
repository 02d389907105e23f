/* nbdfs — NBD_OPT_GO / NBD_OPT_INFO (same request and replies) and the
 * NBD_OPT_EXPORT_NAME fallback (nbd-proto.md "Option types",
 * "NBD_REP_INFO", "Size constraints"). */
#include <string.h>

#include "nbdclient/error.h"
#include "nbdclient/handshake.h"
#include "nbdclient/names.h"
#include "nbdclient/protocol.h"

/* What we ask for. NBD_INFO_EXPORT is always sent, asking costs nothing. */
static const uint16_t info_requests[] = {
  NBD_INFO_EXPORT, NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE,
};

static gboolean
is_pow2 (uint32_t v)
{
  return v != 0 && (v & (v - 1)) == 0;
}

/* "Size constraints": min a power of 2 <= 64 KiB; preferred a power of 2
 * >= max(min, 512); maximum >= preferred (any value, 0xffffffff = no
 * limit). We round max down to a multiple of min so every request we
 * split at max stays aligned. */
static gboolean
set_block_sizes (NbdExport *exp, uint32_t min, uint32_t pref, uint32_t max,
                 GError **error)
{
  const char *why = NULL;
  if (!is_pow2 (min) || min > 65536)
    why = "the minimum must be a power of 2 no larger than 65536";
  else if (!is_pow2 (pref) || pref < min || pref < 512)
    why = "the preferred size must be a power of 2, at least the minimum "
          "and at least 512";
  else if (max < pref)
    why = "the maximum payload must be at least the preferred size";
  if (why) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                 "the server sent invalid block sizes (minimum %u, preferred "
                 "%u, maximum %u): %s", min, pref, max, why);
    return FALSE;
  }
  exp->min_block = min;
  exp->pref_block = pref;
  exp->max_block = max - max % min;
  exp->block_size_from_server = TRUE;
  return TRUE;
}

/* One NBD_REP_INFO. Unknown types are skipped ("MUST ignore information
 * replies it does not understand"). */
static gboolean
parse_info (const NbdcReply *r, NbdExport *exp, gboolean *have_export,
            GError **error)
{
  if (r->len < 2) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                 "info reply to option %u (%s) is only %u bytes long",
                 r->option, nbdc_opt_name (r->option), r->len);
    return FALSE;
  }
  uint16_t type;
  memcpy (&type, r->data, 2);
  type = GUINT16_FROM_BE (type);
  const char *p = r->data + 2;
  uint32_t plen = r->len - 2;
  uint32_t want = 0;
  switch (type) {
  case NBD_INFO_EXPORT: want = sizeof (struct nbd_info_export); break;
  case NBD_INFO_BLOCK_SIZE: want = sizeof (struct nbd_info_block_size); break;
  case NBD_INFO_NAME: case NBD_INFO_DESCRIPTION: break;
  default:
    g_debug ("info %u (%s), %u bytes: skipped", type, nbdc_info_name (type),
             plen);
    return TRUE;
  }
  if (want && r->len != want) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                 "info %u (%s) is %u bytes long, expected %u", type,
                 nbdc_info_name (type), r->len, want);
    return FALSE;
  }
  switch (type) {
  case NBD_INFO_EXPORT: {
    struct nbd_info_export ie;
    memcpy (&ie, r->data, sizeof ie);
    exp->size = GUINT64_FROM_BE (ie.exportsize);
    exp->eflags = GUINT16_FROM_BE (ie.eflags);
    *have_export = TRUE;
    g_debug ("info 0 (export): size %" G_GUINT64_FORMAT ", flags 0x%x",
             (guint64) exp->size, exp->eflags);
    if (exp->size > INT64_MAX)
      return nbdc_check_export (exp, error);
    break;
  }
  case NBD_INFO_BLOCK_SIZE: {
    struct nbd_info_block_size ib;
    memcpy (&ib, r->data, sizeof ib);
    uint32_t min = GUINT32_FROM_BE (ib.minimum);
    uint32_t pref = GUINT32_FROM_BE (ib.preferred);
    uint32_t max = GUINT32_FROM_BE (ib.maximum);
    g_debug ("info 3 (block size): minimum %u, preferred %u, maximum %u",
             min, pref, max);
    if (!set_block_sizes (exp, min, pref, max, error))
      return FALSE;
    break;
  }
  case NBD_INFO_NAME:
    g_free (exp->canonical_name);
    exp->canonical_name = nbdc_escape_text (p, plen, NBD_MAX_STRING);
    g_debug ("info 1 (name): %s", exp->canonical_name);
    break;
  case NBD_INFO_DESCRIPTION:
    g_free (exp->description);
    exp->description = nbdc_escape_text (p, plen, NBD_MAX_STRING);
    g_debug ("info 2 (description): %s", exp->description);
    break;
  }
  return TRUE;
}

int
nbdc_opt_go (NbdcHandshake *h, uint32_t opt, const char *export,
             NbdExport *exp, GError **error)
{
  size_t nlen = strlen (export);
  if (nlen > NBD_MAX_STRING) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "export names are at most %d bytes", NBD_MAX_STRING);
    return -1;
  }
  /* 32-bit name length, name, 16-bit count, 16-bit info types. */
  size_t len = 4 + nlen + 2 + 2 * G_N_ELEMENTS (info_requests);
  g_autofree guint8 *req = g_malloc (len);
  uint32_t nlen_be = GUINT32_TO_BE ((uint32_t) nlen);
  memcpy (req, &nlen_be, 4);
  memcpy (req + 4, export, nlen);
  uint16_t n_be = GUINT16_TO_BE (G_N_ELEMENTS (info_requests));
  memcpy (req + 4 + nlen, &n_be, 2);
  for (size_t i = 0; i < G_N_ELEMENTS (info_requests); i++) {
    uint16_t v = GUINT16_TO_BE (info_requests[i]);
    memcpy (req + 4 + nlen + 2 + 2 * i, &v, 2);
  }
  if (!nbdc_send_option (h, opt, req, len, error))
    return -1;

  gboolean have_export = FALSE;
  for (;;) {
    NbdcReply r;
    if (!nbdc_receive_reply (h, opt, &r, error))
      return -1;
    if (r.type == NBD_REP_INFO) {
      gboolean ok = parse_info (&r, exp, &have_export, error);
      nbdc_reply_clear (&r);
      if (!ok)
        return -1;
      continue;
    }
    if (r.type == NBD_REP_ACK) {
      guint32 rlen = r.len;
      nbdc_reply_clear (&r);
      if (rlen != 0) {
        g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                     "the server's ack to option %u (%s) carries %u bytes",
                     opt, nbdc_opt_name (opt), rlen);
        return -1;
      }
      if (!have_export) {
        /* "The server MUST send an NBD_INFO_EXPORT information type at
         * some point before sending an NBD_REP_ACK". */
        g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                     "the server acknowledged option %u (%s) without "
                     "sending the export size and flags (NBD_INFO_EXPORT)",
                     opt, nbdc_opt_name (opt));
        return -1;
      }
      return 1;
    }
    if (r.type == NBD_REP_ERR_UNSUP) {
      nbdc_reply_clear (&r);
      return 0;
    }
    if (r.type & NBD_REP_FLAG_ERROR) {
      nbdc_set_reply_error (error, &r, export);
      if (r.type == NBD_REP_ERR_EXT_HEADER_REQD && h->ext_hint && *error) {
        /* Say why we did without them (kernel mode, the option, or the
         * server's own refusal). */
        char *old = (*error)->message;
        (*error)->message = g_strdup_printf ("%s (%s)", old, h->ext_hint);
        g_free (old);
      }
    }
    else
      nbdc_set_unexpected_reply (error, &r);
    nbdc_reply_clear (&r);
    return -1;
  }
}

gboolean
nbdc_opt_export_name (NbdcHandshake *h, const char *export, NbdExport *exp,
                      GError **error)
{
  size_t nlen = strlen (export);
  if (nlen > NBD_MAX_STRING) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "export names are at most %d bytes", NBD_MAX_STRING);
    return FALSE;
  }
  if (!nbdc_send_option (h, NBD_OPT_EXPORT_NAME, export, nlen, error))
    return FALSE;
  /* No option reply header: size, flags, and 124 zeroes unless
   * NBD_FLAG_C_NO_ZEROES. A server that dislikes the name just closes the
   * connection, which is all we can report. */
  struct nbd_export_name_reply rep;
  size_t want = sizeof rep - (h->no_zeroes ? sizeof rep.zeroes : 0);
  GError *err = NULL;
  if (!nbdc_read_full (h->t, &rep, want, h->deadline,
                       "reading the reply to option 1 (export name)", &err)) {
    if (err->domain == NBDFS_ERROR && err->code == NBDFS_ERROR_PROTOCOL) {
      g_autofree char *name = nbdc_escape_text (export, nlen, 256);
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_NO_SUCH_EXPORT,
                   "the server closed the connection when asked for export "
                   "\"%s\": it probably does not exist or needs TLS (this "
                   "server cannot say which: it does not support "
                   "NBD_OPT_GO)", name);
      g_error_free (err);
    }
    else
      g_propagate_error (error, err);
    return FALSE;
  }
  exp->size = GUINT64_FROM_BE (rep.exportsize);
  exp->eflags = GUINT16_FROM_BE (rep.eflags);
  exp->used_export_name = TRUE;
  g_debug ("option 1 (export name) -> size %" G_GUINT64_FORMAT ", flags 0x%x",
           (guint64) exp->size, exp->eflags);
  return TRUE;
}
