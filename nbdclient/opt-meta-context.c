/* nbdfs — NBD_OPT_SET_META_CONTEXT and NBD_OPT_LIST_META_CONTEXT
 * (nbd-proto.md "Metadata querying", "base:allocation metadata context").
 * Both send: export name, number of queries, queries; both get
 * NBD_REP_META_CONTEXT replies {32-bit id, name} then an ack or error. */
#include <string.h>

#include "nbdclient/error.h"
#include "nbdclient/handshake.h"
#include "nbdclient/names.h"
#include "nbdclient/protocol.h"

#define BASE_ALLOCATION "base:allocation"

static GByteArray *
build_request (const char *export, const char *query)
{
  GByteArray *b = g_byte_array_new ();
  uint32_t len = GUINT32_TO_BE ((uint32_t) strlen (export));
  g_byte_array_append (b, (guint8 *) &len, 4);
  g_byte_array_append (b, (const guint8 *) export, strlen (export));
  uint32_t n = GUINT32_TO_BE (query ? 1 : 0);
  g_byte_array_append (b, (guint8 *) &n, 4);
  if (query) {
    len = GUINT32_TO_BE ((uint32_t) strlen (query));
    g_byte_array_append (b, (guint8 *) &len, 4);
    g_byte_array_append (b, (const guint8 *) query, strlen (query));
  }
  return b;
}

/* Runs one meta context option. Each context goes to names (if not NULL)
 * and, if it is base:allocation, sets *id. Returns 1 after an ack, 0 after
 * an error reply that only means "no contexts" (ERR_UNSUP, INVALID...),
 * -1 with error set. */
static int
meta_context (NbdcHandshake *h, uint32_t opt, const char *export,
              const char *query, GPtrArray *names, gboolean *have_id,
              uint32_t *id, GError **error)
{
  g_autoptr (GByteArray) req = build_request (export, query);
  if (!nbdc_send_option (h, opt, req->data, req->len, error))
    return -1;
  for (;;) {
    NbdcReply r;
    if (!nbdc_receive_reply (h, opt, &r, error))
      return -1;
    if (r.type == NBD_REP_META_CONTEXT) {
      if (r.len < 4 || r.len - 4 > NBD_MAX_STRING) {
        g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                     "bad meta context reply length %u to option %u (%s)",
                     r.len, opt, nbdc_opt_name (opt));
        nbdc_reply_clear (&r);
        return -1;
      }
      uint32_t cid;
      memcpy (&cid, r.data, 4);
      cid = GUINT32_FROM_BE (cid);
      const char *name = r.data + 4;
      size_t nlen = r.len - 4;
      g_autofree char *shown = nbdc_escape_text (name, nlen, NBD_MAX_STRING);
      g_debug ("meta context %u: %s", cid, shown);
      if (have_id && nlen == strlen (BASE_ALLOCATION)
          && memcmp (name, BASE_ALLOCATION, nlen) == 0) {
        *have_id = TRUE;
        *id = cid;
      }
      if (names && names->len >= NBDC_MAX_LIST_ENTRIES) {
        g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                     "the server lists more than %d meta contexts",
                     NBDC_MAX_LIST_ENTRIES);
        nbdc_reply_clear (&r);
        return -1;
      }
      if (names)
        g_ptr_array_add (names, g_steal_pointer (&shown));
      nbdc_reply_clear (&r);
      continue;
    }
    if (r.type == NBD_REP_ACK) {
      gboolean ok = r.len == 0;
      if (!ok)
        g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                     "the server's ack to option %u (%s) carries %u bytes",
                     opt, nbdc_opt_name (opt), r.len);
      nbdc_reply_clear (&r);
      return ok ? 1 : -1;
    }
    if (r.type == NBD_REP_ERR_TLS_REQD || !(r.type & NBD_REP_FLAG_ERROR)) {
      if (r.type & NBD_REP_FLAG_ERROR)
        nbdc_set_reply_error (error, &r, export);
      else
        nbdc_set_unexpected_reply (error, &r);
      nbdc_reply_clear (&r);
      return -1;
    }
    /* "If an error is returned, the client MUST disregard any context
     * replies that may have been sent." */
    g_debug ("option %u (%s) refused (%s): no meta contexts", opt,
             nbdc_opt_name (opt), nbdc_rep_name (r.type));
    if (have_id)
      *have_id = FALSE;
    if (names)
      g_ptr_array_set_size (names, 0);
    nbdc_reply_clear (&r);
    return 0;
  }
}

gboolean
nbdc_opt_set_meta_context (NbdcHandshake *h, const char *export,
                           NbdExport *exp, GError **error)
{
  gboolean have = FALSE;
  uint32_t id = 0;
  if (meta_context (h, NBD_OPT_SET_META_CONTEXT, export, BASE_ALLOCATION,
                    NULL, &have, &id, error) < 0)
    return FALSE;
  exp->base_allocation = have;
  exp->base_allocation_id = id;
  return TRUE;
}

gboolean
nbdc_opt_list_meta_context (NbdcHandshake *h, const char *export,
                            GPtrArray *names, GError **error)
{
  return meta_context (h, NBD_OPT_LIST_META_CONTEXT, export, NULL, names,
                       NULL, NULL, error) >= 0;
}
