/* nbdfs — the handshake: one blocking negotiator for both consumers.
 *
 * magic -> handshake flags -> client flags -> (STARTTLS) ->
 * EXTENDED_HEADERS (else STRUCTURED_REPLY) -> SET_META_CONTEXT
 * base:allocation ->
 * OPT_GO {EXPORT, NAME, DESCRIPTION, BLOCK_SIZE} (fallback EXPORT_NAME on
 * ERR_UNSUP); oldstyle and plain newstyle too. See nbd-proto.md
 * "Handshake" and "Option types". Knows nothing of FUSE or /dev/nbd.
 */
#ifndef NBDCLIENT_NEGOTIATE_H
#define NBDCLIENT_NEGOTIATE_H

#include <stdint.h>
#include <glib.h>
#include "nbdclient/address.h"
#include "nbdclient/tls.h"
#include "nbdclient/transport.h"

typedef enum {
  NBDC_STYLE_OLDSTYLE,
  NBDC_STYLE_NEWSTYLE,        /* no NBD_FLAG_FIXED_NEWSTYLE */
  NBDC_STYLE_FIXED_NEWSTYLE,
} NbdcStyle;

/* What the caller asks for; shared by every connection of a pool. */
typedef struct {
  NbdAddress addr;            /* where, and which export (addr.export_name) */
  NbdcTlsMode tls;            /* resolved: OFF, ALLOW or REQUIRE (DEFAULT is
                                 taken from addr.tls) */
  NbdcTlsConfig tls_config;
  gboolean no_structured;     /* kernel mode: simple replies only (and so
                                 no extended headers either) */
  gboolean no_extended;       /* never ask for extended headers
                                 (--no-extended-headers) */
  gboolean no_meta;           /* do not ask for base:allocation */
  unsigned handshake_timeout; /* seconds for connect + handshake; 0 = 30 */
} NbdcOptions;

void nbdc_options_clear (NbdcOptions *opts);
void nbdc_options_copy (NbdcOptions *dst, const NbdcOptions *src);

/* The boundary struct both modes consume (cf. qemu's NBDExportInfo).
 * Everything here is set from server replies (validated) or our defaults. */
typedef struct {
  uint64_t size;              /* <= INT64_MAX, checked */
  uint16_t eflags;            /* NBD_FLAG_* transmission flags */
  /* Block sizes ("Size constraints"): the server's if it sent
   * NBD_INFO_BLOCK_SIZE (validated: powers of two, min <= pref, min <=
   * max, max a multiple of min), else 1 / 4096 / 32 MiB defaults. */
  uint32_t min_block;
  uint32_t pref_block;
  uint32_t max_block;         /* maximum payload we may send/ask for */
  gboolean block_size_from_server;
  NbdcStyle style;
  gboolean no_zeroes;         /* NBD_FLAG_NO_ZEROES was used */
  /* NBD_OPT_STRUCTURED_REPLY acked, or extended headers: chunked replies
   * (holes, error text, block status) either way. */
  gboolean structured;
  /* NBD_OPT_EXTENDED_HEADERS acked (spec branch extension-ext-header):
   * 32-byte requests and replies, 64-bit effect lengths. */
  gboolean extended;
  gboolean base_allocation;   /* base:allocation context negotiated */
  uint32_t base_allocation_id;
  gboolean used_export_name;  /* fell back to NBD_OPT_EXPORT_NAME */
  gboolean tls;               /* transmission runs inside TLS */
  char *name;                 /* export name asked for (copy) */
  char *canonical_name;       /* NBD_INFO_NAME, escaped; NULL if not sent */
  char *description;          /* NBD_INFO_DESCRIPTION, escaped; or NULL */
} NbdExport;

void nbdc_export_clear (NbdExport *exp);
/* "extended headers", "structured replies" or "simple replies". */
const char *nbdc_reply_mode_name (const NbdExport *exp);
void nbdc_export_copy (NbdExport *dst, const NbdExport *src);

/* Negotiates on a connected fd (which it takes over). Returns the transport
 * in transmission phase (TLS if STARTTLS happened) with *exp filled, or NULL
 * with error set (fd closed, *exp cleared: nothing to free). exp must be
 * zero-initialised or hold a previous result. deadline: see transport.h. */
NbdTransport *nbdc_negotiate (int fd, const NbdcOptions *opts, NbdExport *exp,
                              gint64 deadline, GError **error);

/* Connect + negotiate, bounded by opts->handshake_timeout. Errors are
 * prefixed with the address ("nbd.example:10809: ..."). Same contract for
 * *exp as nbdc_negotiate. */
NbdTransport *nbdc_open (const NbdcOptions *opts, NbdExport *exp,
                         GError **error);

/* ---- Queries that end with NBD_OPT_ABORT (list.c) ---- */

typedef struct {
  char *name;                 /* escaped for printing */
  char *description;          /* escaped; "" if none */
  /* The name exactly as the server sent it (NUL-terminated for
   * convenience; may hold any bytes): what to put in opts->addr.export_name
   * to open this export. */
  char *raw_name;
  size_t raw_name_len;
} NbdExportEntry;

/* NBD_OPT_LIST: fills *entries (GPtrArray of NbdExportEntry, owns them). */
gboolean nbdc_list_exports (const NbdcOptions *opts, GPtrArray **entries,
                            GError **error);

/* NBD_OPT_INFO (fallback: OPT_GO/EXPORT_NAME then NBD_CMD_DISC) for
 * opts->addr.export_name, plus NBD_OPT_LIST_META_CONTEXT when
 * structured replies are available: *contexts is a GPtrArray of char*
 * (may be empty). */
gboolean nbdc_query_info (const NbdcOptions *opts, NbdExport *exp,
                          GPtrArray **contexts, GError **error);

#endif
