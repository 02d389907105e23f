/* nbdfs — a tiny JSON string writer for --json output (json-glib is not a
 * dependency: we only ever write flat objects of strings and numbers). */
#ifndef NBDFS_JSON_H
#define NBDFS_JSON_H

#include <glib.h>

/* Appends s as a JSON string literal (quotes included). Bytes that are
 * not valid UTF-8 become U+FFFD, so the output is always valid JSON. */
void nbdfs_json_append_string (GString *out, const char *s);

/* TRUE if s[0..len) is valid UTF-8 without NUL, i.e. JSON can carry it
 * exactly. */
gboolean nbdfs_json_can_carry (const char *s, size_t len);

#endif
