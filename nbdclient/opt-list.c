/* nbdfs — NBD_OPT_LIST, NBD_OPT_ABORT and NBD_CMD_DISC: the ways a query
 * ends ("Termination of the session during option haggling"). */
#include <string.h>

#include "nbdclient/error.h"
#include "nbdclient/handshake.h"
#include "nbdclient/names.h"
#include "nbdclient/protocol.h"

/* How long we wait for the server's ack to NBD_OPT_ABORT. */
#define ABORT_WAIT_USEC (2 * G_USEC_PER_SEC)

void
nbdc_export_entry_free (gpointer p)
{
  NbdExportEntry *e = p;
  if (e == NULL)
    return;
  g_free (e->name);
  g_free (e->description);
  g_free (e->raw_name);
  g_free (e);
}

gboolean
nbdc_opt_list (NbdcHandshake *h, GPtrArray *entries, GError **error)
{
  if (!nbdc_send_option (h, NBD_OPT_LIST, NULL, 0, error))
    return FALSE;
  for (guint count = 0;; count++) {
    NbdcReply r;
    if (!nbdc_receive_reply (h, NBD_OPT_LIST, &r, error))
      return FALSE;
    if (r.type == NBD_REP_SERVER) {
      /* 32-bit name length, name, then a description for humans. */
      uint32_t nlen;
      if (r.len < 4 || (memcpy (&nlen, r.data, 4),
                        nlen = GUINT32_FROM_BE (nlen), nlen > r.len - 4)) {
        g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                     "bad export list entry (reply length %u)", r.len);
        nbdc_reply_clear (&r);
        return FALSE;
      }
      if (count >= NBDC_MAX_LIST_ENTRIES) {
        g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                     "the server lists more than %d exports",
                     NBDC_MAX_LIST_ENTRIES);
        nbdc_reply_clear (&r);
        return FALSE;
      }
      NbdExportEntry *e = g_new0 (NbdExportEntry, 1);
      e->name = nbdc_escape_text (r.data + 4, nlen, NBD_MAX_STRING);
      e->raw_name = g_malloc (nlen + 1);
      memcpy (e->raw_name, r.data + 4, nlen);
      e->raw_name[nlen] = '\0';
      e->raw_name_len = nlen;
      e->description = nbdc_escape_text (r.data + 4 + nlen,
                                         r.len - 4 - nlen, NBD_MAX_STRING);
      g_debug ("export \"%s\" (%s)", e->name, e->description);
      g_ptr_array_add (entries, e);
      nbdc_reply_clear (&r);
      continue;
    }
    gboolean ok = FALSE;
    if (r.type == NBD_REP_ACK)
      ok = TRUE;
    else if (r.type & NBD_REP_FLAG_ERROR)
      nbdc_set_reply_error (error, &r, NULL);
    else
      nbdc_set_unexpected_reply (error, &r);
    nbdc_reply_clear (&r);
    return ok;
  }
}

void
nbdc_opt_abort (NbdcHandshake *h)
{
  if (h->t == NULL)
    return;
  /* The server SHOULD ack, but may just close: both are fine, and so is
   * a server that does neither for a while. */
  gint64 saved = h->deadline;
  gint64 soon = g_get_monotonic_time () + ABORT_WAIT_USEC;
  h->deadline = saved && saved < soon ? saved : soon;
  NbdcReply r;
  if (nbdc_send_option (h, NBD_OPT_ABORT, NULL, 0, NULL)
      && nbdc_receive_reply (h, NBD_OPT_ABORT, &r, NULL))
    nbdc_reply_clear (&r);
  h->deadline = saved;
  if (h->t && h->t->ops->shutdown)
    h->t->ops->shutdown (h->t);
  nbdc_handshake_close (h);
}

void
nbdc_send_disc (NbdcHandshake *h)
{
  if (h->t == NULL)
    return;
  struct nbd_request req = {
    .magic = GUINT32_TO_BE (NBD_REQUEST_MAGIC),
    .type = GUINT16_TO_BE (NBD_CMD_DISC),
  };
  /* After extended headers every request is the 32-byte form; a compact
   * one would leave the server waiting for 4 more bytes. */
  struct nbd_extended_request ext = {
    .magic = GUINT32_TO_BE (NBD_EXTENDED_REQUEST_MAGIC),
    .type = GUINT16_TO_BE (NBD_CMD_DISC),
  };
  gint64 soon = g_get_monotonic_time () + ABORT_WAIT_USEC;
  g_debug ("command %u (%s)", NBD_CMD_DISC, nbdc_cmd_name (NBD_CMD_DISC));
  if (h->extended)
    nbdc_write_full (h->t, &ext, sizeof ext, soon, "sending disconnect",
                     NULL);
  else
    nbdc_write_full (h->t, &req, sizeof req, soon, "sending disconnect",
                     NULL);
  if (h->t->ops->shutdown)
    h->t->ops->shutdown (h->t);
  nbdc_handshake_close (h);
}
