/* nbdfs — queries that never enter transmission: NBD_OPT_LIST (--list,
 * --all) and NBD_OPT_INFO + NBD_OPT_LIST_META_CONTEXT (--info); plus the
 * clear/copy helpers of the negotiate.h types. */
#include <string.h>

#include "nbdclient/connect.h"
#include "nbdclient/error.h"
#include "nbdclient/handshake.h"
#include "nbdclient/names.h"
#include "nbdclient/protocol.h"

void
nbdc_options_clear (NbdcOptions *opts)
{
  nbdc_address_clear (&opts->addr);
  nbdc_tls_config_clear (&opts->tls_config);
}

void
nbdc_options_copy (NbdcOptions *dst, const NbdcOptions *src)
{
  *dst = *src;
  nbdc_address_copy (&dst->addr, &src->addr);
  nbdc_tls_config_copy (&dst->tls_config, &src->tls_config);
}

void
nbdc_export_clear (NbdExport *exp)
{
  g_clear_pointer (&exp->name, g_free);
  g_clear_pointer (&exp->canonical_name, g_free);
  g_clear_pointer (&exp->description, g_free);
}

void
nbdc_export_copy (NbdExport *dst, const NbdExport *src)
{
  *dst = *src;
  dst->name = g_strdup (src->name);
  dst->canonical_name = g_strdup (src->canonical_name);
  dst->description = g_strdup (src->description);
}

/* Connects and runs the handshake up to option haggling. */
static gboolean
begin (const NbdcOptions *opts, NbdcHandshake *h, NbdExport *exp,
       GError **error)
{
  h->deadline = nbdc_handshake_deadline (opts);
  int fd = nbdc_connect (&opts->addr, h->deadline, error);
  if (fd < 0)
    return FALSE;
  if (!nbdc_handshake_begin (h, fd, opts, exp, error)) {
    g_autofree char *where = nbdc_address_describe (&opts->addr);
    g_prefix_error (error, "%s: ", where);
    return FALSE;
  }
  return TRUE;
}

/* error is never NULL in these two (see the wrappers at the end). */
static gboolean
list_exports (const NbdcOptions *opts, GPtrArray **entries, GError **error)
{
  NbdcHandshake h = { 0 };
  NbdExport exp;
  nbdc_export_init (&exp, "");
  g_autofree char *where = nbdc_address_describe (&opts->addr);
  *entries = NULL;

  gboolean ok = begin (opts, &h, &exp, error);
  nbdc_export_clear (&exp);
  if (!ok)
    return FALSE;
  if (h.style != NBDC_STYLE_FIXED_NEWSTYLE) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED,
                 "%s: the server uses %s negotiation, which cannot list "
                 "exports", where, h.style == NBDC_STYLE_OLDSTYLE
                 ? "oldstyle" : "(unfixed) newstyle");
    nbdc_handshake_close (&h);
    return FALSE;
  }
  GPtrArray *list = g_ptr_array_new_with_free_func (nbdc_export_entry_free);
  if (!nbdc_opt_list (&h, list, error)) {
    g_prefix_error (error, "%s: listing exports: ", where);
    g_ptr_array_unref (list);
    nbdc_handshake_fail (&h, *error);
    return FALSE;
  }
  nbdc_opt_abort (&h);
  *entries = list;
  return TRUE;
}

static gboolean
query_info (const NbdcOptions *opts, NbdExport *exp, GPtrArray **contexts,
            GError **error)
{
  NbdcHandshake h = { 0 };
  const char *export = opts->addr.export_name ? opts->addr.export_name : "";
  g_autofree char *where = nbdc_address_describe (&opts->addr);
  GPtrArray *ctx = g_ptr_array_new_with_free_func (g_free);
  *contexts = NULL;

  nbdc_export_clear (exp);
  nbdc_export_init (exp, export);
  if (!begin (opts, &h, exp, error)) {
    g_ptr_array_unref (ctx);
    nbdc_export_clear (exp);
    return FALSE;
  }

  switch (h.style) {
  case NBDC_STYLE_OLDSTYLE:
    /* The greeting was everything there is to know; just hang up. */
    if (!nbdc_oldstyle_check_name (export, error))
      goto fail;
    nbdc_handshake_close (&h);
    break;

  case NBDC_STYLE_NEWSTYLE:
    /* Only NBD_OPT_EXPORT_NAME exists: enter transmission, disconnect. */
    if (!nbdc_opt_export_name (&h, export, exp, error))
      goto fail;
    nbdc_send_disc (&h);
    break;

  case NBDC_STYLE_FIXED_NEWSTYLE: {
    /* The reply mode first: LIST_META_CONTEXT "SHOULD NOT be requested
     * unless structured replies or extended headers have been
     * negotiated". */
    if (!nbdc_opt_reply_mode (&h, opts, exp, error))
      goto fail;
    int r = nbdc_opt_go (&h, NBD_OPT_INFO, export, exp, error);
    if (r < 0) {
      if (g_error_matches (*error, NBDFS_ERROR, NBDFS_ERROR_NO_SUCH_EXPORT))
        nbdc_append_export_list (&h, error);
      goto fail;
    }
    if (r == 0)
      g_debug ("NBD_OPT_INFO unsupported: NBD_OPT_GO will tell");
    if (exp->structured && !opts->no_meta
        && (!nbdc_opt_list_meta_context (&h, export, ctx, error)
            || !nbdc_opt_set_meta_context (&h, export, exp, error)))
      goto fail;
    /* Then NBD_OPT_GO, and leave with NBD_CMD_DISC: --info reports what
     * a mount would really get. (nbd-server 3.24 answers NBD_OPT_INFO
     * with size 0; its NBD_OPT_GO has the real size.) Servers without
     * GO get NBD_OPT_EXPORT_NAME. */
    uint64_t info_size = exp->size;
    r = nbdc_opt_go (&h, NBD_OPT_GO, export, exp, error);
    if (r < 0)
      goto fail;
    if (r == 0 && exp->extended) {
      /* Never NBD_OPT_EXPORT_NAME after extended headers (see
       * negotiate.c). */
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                   "the server acked extended headers, then said it does "
                   "not support NBD_OPT_GO");
      goto fail;
    }
    if (r == 0 && !nbdc_opt_export_name (&h, export, exp, error))
      goto fail;
    if (exp->size != info_size)
      g_debug ("NBD_OPT_INFO said size %" G_GUINT64_FORMAT ", NBD_OPT_GO "
               "says %" G_GUINT64_FORMAT ": using the latter",
               (guint64) info_size, (guint64) exp->size);
    nbdc_send_disc (&h);
    break;
  }
  }
  exp->tls = h.tls;
  if (!nbdc_check_export (exp, error))
    goto fail;
  *contexts = ctx;
  return TRUE;

fail:
  nbdc_handshake_fail (&h, *error);
  nbdc_export_clear (exp);
  g_prefix_error (error, "%s: ", where);
  g_ptr_array_unref (ctx);
  return FALSE;
}

gboolean
nbdc_list_exports (const NbdcOptions *opts, GPtrArray **entries,
                   GError **error)
{
  GError *err = NULL;
  gboolean ok = list_exports (opts, entries, &err);
  if (!ok)
    g_propagate_error (error, err);
  return ok;
}

gboolean
nbdc_query_info (const NbdcOptions *opts, NbdExport *exp,
                 GPtrArray **contexts, GError **error)
{
  GError *err = NULL;
  gboolean ok = query_info (opts, exp, contexts, &err);
  if (!ok)
    g_propagate_error (error, err);
  return ok;
}
