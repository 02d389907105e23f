/* nbdfs — the handshake (nbd-proto.md "Handshake"): magic, handshake
 * flags, client flags, then either the oldstyle export or option haggling
 * (STARTTLS -> EXTENDED_HEADERS or STRUCTURED_REPLY -> SET_META_CONTEXT ->
 * GO, falling back to EXPORT_NAME unless extended headers were acked). One blocking negotiator for FUSE and kernel mode. */
#include <string.h>
#include <unistd.h>

#include "nbdclient/connect.h"
#include "nbdclient/error.h"
#include "nbdclient/handshake.h"
#include "nbdclient/names.h"
#include "nbdclient/protocol.h"

#define DEFAULT_HANDSHAKE_TIMEOUT 30   /* seconds */

void
nbdc_export_init (NbdExport *exp, const char *name)
{
  memset (exp, 0, sizeof *exp);
  exp->min_block = NBD_DEFAULT_MIN_BLOCK;
  exp->pref_block = NBD_DEFAULT_PREF_BLOCK;
  exp->max_block = NBD_DEFAULT_MAX_PAYLOAD;
  exp->name = g_strdup (name ? name : "");
}

gboolean
nbdc_oldstyle_check_name (const char *export, GError **error)
{
  if (*export == '\0')
    return TRUE;
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED,
               "the server uses oldstyle negotiation, which has no "
               "export names: leave out the export name \"%s\"", export);
  return FALSE;
}

void
nbdc_handshake_close (NbdcHandshake *h)
{
  g_clear_pointer (&h->t, nbdc_transport_free);
}

gboolean
nbdc_error_is_refusal (const GError *error)
{
  if (error == NULL || error->domain != NBDFS_ERROR)
    return FALSE;
  switch (error->code) {
  case NBDFS_ERROR_REFUSED:
  case NBDFS_ERROR_TLS_REQUIRED:
  case NBDFS_ERROR_NO_SUCH_EXPORT:
  case NBDFS_ERROR_UNSUPPORTED:
  case NBDFS_ERROR_USAGE:
    return TRUE;
  default:
    return FALSE;
  }
}

void
nbdc_handshake_fail (NbdcHandshake *h, const GError *error)
{
  if (h->t && h->style == NBDC_STYLE_FIXED_NEWSTYLE
      && nbdc_error_is_refusal (error))
    nbdc_opt_abort (h);
  nbdc_handshake_close (h);
}

NbdcTlsMode
nbdc_tls_mode (const NbdcOptions *opts)
{
  /* nbds:// "MUST fail" without TLS, whatever else was said; DEFAULT
   * (a caller that did not resolve it) means plain. */
  if (opts->addr.tls == NBDC_TLS_REQUIRE)
    return NBDC_TLS_REQUIRE;
  return opts->tls == NBDC_TLS_DEFAULT ? NBDC_TLS_OFF : opts->tls;
}

static gboolean
refuse_clear_text (const NbdcOptions *opts, const char *why, GError **error)
{
  if (nbdc_tls_mode (opts) != NBDC_TLS_REQUIRE)
    return TRUE;
  /* "Protocol downgrade attacks": a client that requires TLS never goes
   * on in clear text, whatever the server (or a MitM) claims. */
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_TLS_REQUIRED,
               "TLS is required but %s, so it cannot do TLS; refusing to "
               "continue without encryption", why);
  return FALSE;
}

gboolean
nbdc_handshake_begin (NbdcHandshake *h, int fd, const NbdcOptions *opts,
                      NbdExport *exp, GError **error)
{
  struct {
    uint64_t passwd;
    uint64_t magic;
  } __attribute__((packed)) start;

  h->t = nbdc_transport_plain_new (fd);
  if (!nbdc_read_full (h->t, &start, sizeof start, h->deadline,
                       "reading the server greeting", error)) {
    /* The connection was accepted (perhaps only by the kernel's listen
     * backlog) but no greeting came: what a server at its connection
     * limit looks like (qemu-nbd --shared=N stops accepting, nbd-server
     * max_connections), so say so rather than leave a bare timeout. */
    if (error && g_error_matches (*error, NBDFS_ERROR, NBDFS_ERROR_TIMEOUT)) {
      char *msg = (*error)->message;
      (*error)->message = g_strconcat (msg, " (the server accepted the "
                                       "connection but never greeted: it "
                                       "may be at its connection limit, "
                                       "e.g. qemu-nbd --shared)", NULL);
      g_free (msg);
    }
    goto fail;
  }
  uint64_t passwd = GUINT64_FROM_BE (start.passwd);
  uint64_t magic = GUINT64_FROM_BE (start.magic);
  if (passwd != NBD_INIT_PASSWD) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                 "not an NBD server: bad greeting magic 0x%016"
                 G_GINT64_MODIFIER "x (expected \"NBDMAGIC\")",
                 (guint64) passwd);
    goto fail;
  }

  if (magic == NBD_OLDSTYLE_MAGIC) {
    /* "Oldstyle negotiation": size, 32-bit flags, 124 zeroes. */
    struct {
      uint64_t size;
      uint32_t flags;
      uint8_t zeroes[124];
    } __attribute__((packed)) old;
    h->style = NBDC_STYLE_OLDSTYLE;
    g_debug ("oldstyle negotiation");
    if (!refuse_clear_text (opts, "the server uses oldstyle negotiation",
                            error))
      goto fail;
    if (!nbdc_read_full (h->t, &old, sizeof old, h->deadline,
                         "reading the oldstyle handshake", error))
      goto fail;
    exp->style = NBDC_STYLE_OLDSTYLE;
    exp->size = GUINT64_FROM_BE (old.size);
    uint32_t flags = GUINT32_FROM_BE (old.flags);
    /* The high 16 bits were never used for transmission flags. */
    exp->eflags = flags & 0xffff;
    return TRUE;
  }
  if (magic != NBD_NEWSTYLE_MAGIC) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                 "bad handshake magic 0x%016" G_GINT64_MODIFIER "x (expected "
                 "oldstyle 0x%016" G_GINT64_MODIFIER "x or \"IHAVEOPT\")",
                 (guint64) magic, (guint64) NBD_OLDSTYLE_MAGIC);
    goto fail;
  }

  /* "Newstyle negotiation": 16-bit handshake flags, our 32-bit flags. */
  uint16_t gflags_be;
  if (!nbdc_read_full (h->t, &gflags_be, sizeof gflags_be, h->deadline,
                       "reading the handshake flags", error))
    goto fail;
  uint16_t gflags = GUINT16_FROM_BE (gflags_be);
  uint32_t cflags = 0;
  if (gflags & NBD_FLAG_FIXED_NEWSTYLE)
    cflags |= NBD_FLAG_C_FIXED_NEWSTYLE;
  if (gflags & NBD_FLAG_NO_ZEROES)
    cflags |= NBD_FLAG_C_NO_ZEROES;
  h->style = (gflags & NBD_FLAG_FIXED_NEWSTYLE)
    ? NBDC_STYLE_FIXED_NEWSTYLE : NBDC_STYLE_NEWSTYLE;
  h->no_zeroes = (cflags & NBD_FLAG_C_NO_ZEROES) != 0;
  exp->style = h->style;
  exp->no_zeroes = h->no_zeroes;
  g_debug ("%s negotiation, handshake flags 0x%x, client flags 0x%x",
           h->style == NBDC_STYLE_FIXED_NEWSTYLE ? "fixed newstyle"
           : "newstyle", gflags, cflags);
  uint32_t cflags_be = GUINT32_TO_BE (cflags);
  if (!nbdc_write_full (h->t, &cflags_be, sizeof cflags_be, h->deadline,
                        "sending the client flags", error))
    goto fail;

  if (h->style == NBDC_STYLE_NEWSTYLE) {
    /* STARTTLS "MUST NOT" be sent without fixed newstyle. */
    if (!refuse_clear_text (opts, "the server does not use fixed newstyle "
                            "negotiation", error))
      goto fail;
    return TRUE;
  }
  if (nbdc_tls_mode (opts) != NBDC_TLS_OFF) {
    if (!nbdc_opt_starttls (h, opts, error))
      goto fail;
    exp->tls = h->tls;
  }
  return TRUE;

fail:
  nbdc_handshake_close (h);
  return FALSE;
}

gboolean
nbdc_check_export (const NbdExport *exp, GError **error)
{
  if (exp->size > INT64_MAX) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                 "the server claims an export size of %" G_GUINT64_FORMAT
                 " bytes, more than the largest possible file (2^63-1)",
                 (guint64) exp->size);
    return FALSE;
  }
  if (!(exp->eflags & NBD_FLAG_HAS_FLAGS)) {
    /* "Transmission flags": NBD_FLAG_HAS_FLAGS MUST always be 1. */
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                 "the server sent transmission flags 0x%x without "
                 "NBD_FLAG_HAS_FLAGS", exp->eflags);
    return FALSE;
  }
  return TRUE;
}

/* After ERR_UNKNOWN: the names the server lists, for the message. The
 * connection is still in option haggling, so NBD_OPT_LIST is allowed. */
void
nbdc_append_export_list (NbdcHandshake *h, GError **error)
{
  g_autoptr (GPtrArray) entries = g_ptr_array_new_with_free_func
    (nbdc_export_entry_free);
  g_autoptr (GError) list_error = NULL;
  if (!nbdc_opt_list (h, entries, &list_error)) {
    g_debug ("cannot list exports: %s", list_error->message);
    return;
  }
  GString *s = g_string_new (entries->len ? "; exports on the server: "
                             : "; the server lists no exports");
  for (guint i = 0; i < entries->len && i < 20; i++) {
    NbdExportEntry *e = entries->pdata[i];
    g_string_append_printf (s, "%s\"%s\"", i ? ", " : "", e->name);
  }
  if (entries->len > 20)
    g_string_append_printf (s, " and %u more (nbdfs --list)",
                            entries->len - 20);
  char *old = (*error)->message;
  (*error)->message = g_strconcat (old, s->str, NULL);
  g_free (old);
  g_string_free (s, TRUE);
}

/* error is never NULL here (see the wrapper below). */
static NbdTransport *
negotiate (int fd, const NbdcOptions *opts, NbdExport *exp,
           gint64 deadline, GError **error)
{
  NbdcHandshake h = { .deadline = deadline };
  const char *export = opts->addr.export_name ? opts->addr.export_name : "";

  nbdc_export_clear (exp);
  nbdc_export_init (exp, export);
  if (!nbdc_handshake_begin (&h, fd, opts, exp, error))
    goto fail;

  switch (h.style) {
  case NBDC_STYLE_OLDSTYLE:
    if (!nbdc_oldstyle_check_name (export, error))
      goto fail;
    break;
  case NBDC_STYLE_NEWSTYLE:
    if (!nbdc_opt_export_name (&h, export, exp, error))
      goto fail;
    break;
  case NBDC_STYLE_FIXED_NEWSTYLE: {
    if (!nbdc_opt_reply_mode (&h, opts, exp, error))
      goto fail;
    if (exp->structured && !opts->no_meta
        && !nbdc_opt_set_meta_context (&h, export, exp, error))
      goto fail;
    int r = nbdc_opt_go (&h, NBD_OPT_GO, export, exp, error);
    if (r < 0) {
      if (g_error_matches (*error, NBDFS_ERROR, NBDFS_ERROR_NO_SUCH_EXPORT))
        nbdc_append_export_list (&h, error);
      goto fail;
    }
    if (r == 0 && exp->extended) {
      /* "if the server has acknowledged a client's request for
       * NBD_OPT_EXTENDED_HEADERS, the server MUST NOT fail NBD_OPT_GO with
       * NBD_REP_ERR_UNSUP"; and we "MUST NOT use NBD_OPT_EXPORT_NAME". */
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                   "the server acked extended headers, then said it does "
                   "not support NBD_OPT_GO");
      goto fail;
    }
    if (r == 0) {
      /* "For backwards compatibility, clients SHOULD be prepared to also
       * handle NBD_REP_ERR_UNSUP by falling back to NBD_OPT_EXPORT_NAME". */
      g_debug ("NBD_OPT_GO unsupported: falling back to NBD_OPT_EXPORT_NAME");
      if (!nbdc_opt_export_name (&h, export, exp, error))
        goto fail;
    }
    break;
  }
  }
  if (!nbdc_check_export (exp, error))
    goto fail;
  exp->tls = h.tls;
  g_debug ("transmission phase: size %" G_GUINT64_FORMAT ", flags 0x%x, "
           "block sizes %u/%u/%u%s, %s, base:allocation %s",
           (guint64) exp->size, exp->eflags, exp->min_block, exp->pref_block,
           exp->max_block, exp->block_size_from_server ? " (server)" : "",
           nbdc_reply_mode_name (exp),
           exp->base_allocation ? "yes" : "no");
  return h.t;

fail:
  nbdc_handshake_fail (&h, *error);
  nbdc_export_clear (exp);    /* nothing for the caller to free */
  return NULL;
}

NbdTransport *
nbdc_negotiate (int fd, const NbdcOptions *opts, NbdExport *exp,
                gint64 deadline, GError **error)
{
  GError *err = NULL;
  NbdTransport *t = negotiate (fd, opts, exp, deadline, &err);
  if (t == NULL)
    g_propagate_error (error, err);
  return t;
}

gint64
nbdc_handshake_deadline (const NbdcOptions *opts)
{
  unsigned secs = opts->handshake_timeout ? opts->handshake_timeout
    : DEFAULT_HANDSHAKE_TIMEOUT;
  return g_get_monotonic_time () + (gint64) secs * G_USEC_PER_SEC;
}

NbdTransport *
nbdc_open (const NbdcOptions *opts, NbdExport *exp, GError **error)
{
  gint64 deadline = nbdc_handshake_deadline (opts);
  g_autofree char *where = nbdc_address_describe (&opts->addr);
  GError *err = NULL;

  int fd = nbdc_connect (&opts->addr, deadline, &err);
  if (fd < 0) {
    g_propagate_error (error, err);   /* already names the address */
    return NULL;
  }
  NbdTransport *t = nbdc_negotiate (fd, opts, exp, deadline, &err);
  if (t == NULL) {
    g_propagate_prefixed_error (error, err, "%s: ", where);
    return NULL;
  }
  return t;
}
