/* nbdfs — what the program writes to stdout: whole texts, checked, and
 * JSON string escaping (RFC 8259 section 7). */
#include <stdio.h>

#include "nbdfs.h"
#include "nbdclient/error.h"

gboolean
nbdfs_output (const GString *text, const char *what, GError **error)
{
  fputs (text->str, stdout);
  if (fflush (stdout) != 0 || ferror (stdout)) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_FAILED,
                 "writing %s failed", what);
    return FALSE;
  }
  return TRUE;
}

void
nbdfs_json_append_string (GString *out, const char *s)
{
  g_string_append_c (out, '"');
  if (s == NULL)
    s = "";
  g_autofree char *valid = g_utf8_make_valid (s, -1);
  for (const char *p = valid; *p; p++) {
    unsigned char c = (unsigned char) *p;
    switch (c) {
    case '"': g_string_append (out, "\\\""); break;
    case '\\': g_string_append (out, "\\\\"); break;
    case '\n': g_string_append (out, "\\n"); break;
    case '\r': g_string_append (out, "\\r"); break;
    case '\t': g_string_append (out, "\\t"); break;
    case '\b': g_string_append (out, "\\b"); break;
    case '\f': g_string_append (out, "\\f"); break;
    default:
      if (c < 0x20 || c == 0x7f)
        g_string_append_printf (out, "\\u%04x", c);
      else
        g_string_append_c (out, c);
    }
  }
  g_string_append_c (out, '"');
}

gboolean
nbdfs_json_can_carry (const char *s, size_t len)
{
  /* g_utf8_validate with a length fails on an embedded NUL. */
  return s != NULL && g_utf8_validate (s, len, NULL);
}

void
nbdfs_json_append_string_or_null (GString *out, const char *s)
{
  if (s == NULL)
    g_string_append (out, "null");
  else
    nbdfs_json_append_string (out, s);
}
