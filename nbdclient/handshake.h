/* nbdfs — internals of the handshake shared by negotiate.c, list.c and the
 * opt-*.c files (one per option, named after the spec's option). Not part
 * of the public API: only nbdclient/ includes this. */
#ifndef NBDCLIENT_HANDSHAKE_H
#define NBDCLIENT_HANDSHAKE_H

#include <stdint.h>
#include <glib.h>
#include "nbdclient/negotiate.h"

/* Our caps on how many NBD_REP_SERVER / NBD_REP_META_CONTEXT replies we
 * keep: each is small, but a hostile server could send them forever. */
#define NBDC_MAX_LIST_ENTRIES 10000

/* One connection in the handshake phase. */
typedef struct {
  NbdTransport *t;
  gint64 deadline;            /* g_get_monotonic_time () based, 0 = none */
  NbdcStyle style;
  gboolean no_zeroes;         /* NBD_FLAG_C_NO_ZEROES sent */
  gboolean tls;               /* STARTTLS done */
  /* Why extended headers are not in use, for NBD_REP_ERR_EXT_HEADER_REQD
   * (a static string), or NULL. */
  const char *ext_hint;
  gboolean extended;          /* NBD_OPT_EXTENDED_HEADERS acked: the
                                 transmission phase uses 32-byte headers */
} NbdcHandshake;

/* One option reply: header fields and the (capped) payload, NUL-terminated
 * for convenience (data[len] == 0). */
typedef struct {
  uint32_t option;
  uint32_t type;
  uint32_t len;
  char *data;
} NbdcReply;

void nbdc_reply_clear (NbdcReply *r);

/* Default block sizes and empty strings. */
void nbdc_export_init (NbdExport *exp, const char *name);

/* "Handshake": reads the magics and flags, answers with client flags, and
 * (fixed newstyle, opts->tls != OFF) does NBD_OPT_STARTTLS. Takes over fd
 * (closed on failure too). Oldstyle fills exp->size/eflags. */
gboolean nbdc_handshake_begin (NbdcHandshake *h, int fd,
                               const NbdcOptions *opts, NbdExport *exp,
                               GError **error);
/* The TLS mode in force: REQUIRE if the address says nbds, else opts->tls
 * with DEFAULT meaning OFF. */
NbdcTlsMode nbdc_tls_mode (const NbdcOptions *opts);
/* now + opts->handshake_timeout (default 30 s), monotonic microseconds. */
gint64 nbdc_handshake_deadline (const NbdcOptions *opts);
/* Oldstyle servers have one unnamed export ("Oldstyle negotiation"):
 * FALSE with a usage hint if the caller asked for a name. */
gboolean nbdc_oldstyle_check_name (const char *export, GError **error);
/* Closes the transport (idempotent). */
void nbdc_handshake_close (NbdcHandshake *h);

/* Option haggling primitives (fixed newstyle). */
gboolean nbdc_send_option (NbdcHandshake *h, uint32_t opt, const void *data,
                           uint32_t len, GError **error);
/* Reads one reply to opt: checks the magic, the echoed option and the
 * length (at most NBD_MAX_OPTION_REPLY) before reading the payload. */
gboolean nbdc_receive_reply (NbdcHandshake *h, uint32_t opt, NbdcReply *r,
                             GError **error);
/* Turns an NBD_REP_ERR_* reply into a sentence with the server's own
 * text appended; export names the export for ERR_UNKNOWN (may be NULL). */
void nbdc_set_reply_error (GError **error, const NbdcReply *r,
                           const char *export);
/* Error for a reply type that makes no sense for the option. */
void nbdc_set_unexpected_reply (GError **error, const NbdcReply *r);

/* The options, one file each. */
gboolean nbdc_opt_starttls (NbdcHandshake *h, const NbdcOptions *opts,
                            GError **error);
gboolean nbdc_opt_structured_reply (NbdcHandshake *h, NbdExport *exp,
                                    GError **error);
/* The reply mode (opt-extended-headers.c): NBD_OPT_EXTENDED_HEADERS
 * unless opts->no_structured or opts->no_extended, then, if that was
 * refused, NBD_OPT_STRUCTURED_REPLY unless opts->no_structured. Sets
 * exp->extended / exp->structured. */
gboolean nbdc_opt_reply_mode (NbdcHandshake *h, const NbdcOptions *opts,
                              NbdExport *exp, GError **error);
gboolean nbdc_opt_set_meta_context (NbdcHandshake *h, const char *export,
                                    NbdExport *exp, GError **error);
/* Fills names (char*) with every context the export offers. */
gboolean nbdc_opt_list_meta_context (NbdcHandshake *h, const char *export,
                                     GPtrArray *names, GError **error);
/* NBD_OPT_GO or NBD_OPT_INFO (opt). Returns 1 on success, 0 when the server
 * answered NBD_REP_ERR_UNSUP (fall back), -1 with error set. */
int nbdc_opt_go (NbdcHandshake *h, uint32_t opt, const char *export,
                 NbdExport *exp, GError **error);
gboolean nbdc_opt_export_name (NbdcHandshake *h, const char *export,
                               NbdExport *exp, GError **error);
/* Appends NbdExportEntry* to entries. */
gboolean nbdc_opt_list (NbdcHandshake *h, GPtrArray *entries, GError **error);
/* Soft disconnect ("Termination of the session during option haggling"):
 * NBD_OPT_ABORT, wait briefly for the ack, close. Never fails. */
void nbdc_opt_abort (NbdcHandshake *h);
/* NBD_CMD_DISC after EXPORT_NAME/GO (transmission phase), then close. */
void nbdc_send_disc (NbdcHandshake *h);

/* TRUE if error is the server saying no (a well-formed refusal), after
 * which a polite NBD_OPT_ABORT is due; FALSE after protocol violations,
 * timeouts and I/O errors, which end in a hard disconnect ("Termination
 * of the session during option haggling"). */
gboolean nbdc_error_is_refusal (const GError *error);
/* Ends a failed handshake the way the spec asks: soft disconnect after a
 * refusal in fixed newstyle option haggling, else just close. */
void nbdc_handshake_fail (NbdcHandshake *h, const GError *error);

/* After NBD_REP_ERR_UNKNOWN: asks NBD_OPT_LIST on the same connection
 * and appends "; exports on the server: ..." to (*error)->message. */
void nbdc_append_export_list (NbdcHandshake *h, GError **error);

/* Checks size and flags once the export is chosen. */
gboolean nbdc_check_export (const NbdExport *exp, GError **error);

void nbdc_export_entry_free (gpointer p);

#endif
