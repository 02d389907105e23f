/* nbdfs — numbers to names, and NBD errors <-> errno (nbd-proto.md
 * "Values"). Debug lines print both: "option 7 (go)". */
#ifndef NBDCLIENT_NAMES_H
#define NBDCLIENT_NAMES_H

#include <stdint.h>
#include <stddef.h>
#include <glib.h>

const char *nbdc_opt_name (uint32_t opt);          /* "go", "list"... */
const char *nbdc_rep_name (uint32_t rep);          /* "ack", "export unknown" */
const char *nbdc_info_name (uint16_t info);
const char *nbdc_cmd_name (uint16_t cmd);          /* "read", "write"... */
const char *nbdc_reply_type_name (uint16_t type);  /* "offset data"... */
const char *nbdc_err_name (uint32_t err);          /* "EIO"... */

/* NBD_E* -> errno (unknown values -> EINVAL, as the spec asks). */
int nbdc_errno_from_nbd (uint32_t err);
/* errno -> NBD_E* (for tests and any server-side use). */
uint32_t nbdc_nbd_from_errno (int err);

/* "read-only, flush, fua, trim, ..." from transmission flags. Caller frees. */
char *nbdc_eflags_to_string (uint16_t eflags);

/* Server-supplied text made safe to print: at most max bytes of input,
 * non-printable and non-UTF-8 bytes as \xNN, "..." when cut. Caller frees. */
char *nbdc_escape_text (const char *s, size_t len, size_t max);

#endif
