/* nbdfs --info ADDRESS [--json]: one export's size, flags, block sizes,
 * handshake style, structured replies, TLS and meta contexts
 * (NBD_OPT_INFO + NBD_OPT_LIST_META_CONTEXT, then NBD_OPT_ABORT). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "nbdfs.h"
#include "nbdclient/error.h"
#include "nbdclient/names.h"
#include "nbdclient/protocol.h"

static const char *
style_name (NbdcStyle style)
{
  switch (style) {
  case NBDC_STYLE_OLDSTYLE: return "oldstyle";
  case NBDC_STYLE_NEWSTYLE: return "newstyle";
  case NBDC_STYLE_FIXED_NEWSTYLE: return "fixed newstyle";
  }
  return "?";
}

/* "64.0 MiB". Not g_format_size: it puts a no-break space (U+00A0)
 * before the unit, which trips up scripts. */
static char *
human_size (uint64_t size)
{
  static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB",
                                       "EiB" };
  if (size < 1024)
    return g_strdup_printf ("%" PRIu64 " bytes", size);
  double v = size / 1024.0;
  size_t u = 0;
  while (v >= 1024.0 && u + 1 < G_N_ELEMENTS (units)) {
    v /= 1024.0;
    u++;
  }
  return g_strdup_printf ("%.1f %s", v, units[u]);
}

static void
append_json (GString *out, const NbdExport *exp, GPtrArray *contexts)
{
  g_autofree char *name = nbdc_escape_text (exp->name, strlen (exp->name),
                                            NBD_MAX_STRING);
  g_autofree char *words = nbdc_eflags_to_string (exp->eflags);
  g_string_append (out, "{\n  \"export\": ");
  nbdfs_json_append_string (out, nbdfs_json_can_carry (exp->name,
                                                       strlen (exp->name))
                            ? exp->name : name);
  if (exp->canonical_name) {
    g_string_append (out, ",\n  \"canonical_name\": ");
    nbdfs_json_append_string (out, exp->canonical_name);
  }
  if (exp->description) {
    g_string_append (out, ",\n  \"description\": ");
    nbdfs_json_append_string (out, exp->description);
  }
  g_string_append_printf (out, ",\n  \"size\": %" PRIu64, exp->size);
  g_string_append_printf (out, ",\n  \"eflags\": %u", exp->eflags);
  g_string_append (out, ",\n  \"flags\": [");
  g_auto (GStrv) list = g_strsplit (words, ", ", -1);
  gboolean first = TRUE;
  for (char **w = list; *w; w++) {
    if (g_str_equal (*w, "none"))
      continue;
    g_string_append (out, first ? "" : ", ");
    nbdfs_json_append_string (out, *w);
    first = FALSE;
  }
  g_string_append (out, "]");
  g_string_append_printf (out, ",\n  \"read_only\": %s",
                          exp->eflags & NBD_FLAG_READ_ONLY ? "true" : "false");
  g_string_append_printf (out, ",\n  \"block_size_minimum\": %u"
                          ",\n  \"block_size_preferred\": %u"
                          ",\n  \"block_size_maximum\": %u"
                          ",\n  \"block_size_from_server\": %s",
                          exp->min_block, exp->pref_block, exp->max_block,
                          exp->block_size_from_server ? "true" : "false");
  g_string_append (out, ",\n  \"handshake\": ");
  nbdfs_json_append_string (out, style_name (exp->style));
  g_string_append (out, ",\n  \"replies\": ");
  nbdfs_json_append_string (out, nbdc_reply_mode_name (exp));
  g_string_append_printf (out, ",\n  \"extended_headers\": %s",
                          exp->extended ? "true" : "false");
  g_string_append_printf (out, ",\n  \"no_zeroes\": %s"
                          ",\n  \"structured_replies\": %s"
                          ",\n  \"tls\": %s",
                          exp->no_zeroes ? "true" : "false",
                          exp->structured ? "true" : "false",
                          exp->tls ? "true" : "false");
  g_string_append (out, ",\n  \"contexts\": [");
  for (guint i = 0; i < contexts->len; i++) {
    g_string_append (out, i ? ", " : "");
    nbdfs_json_append_string (out, contexts->pdata[i]);
  }
  g_string_append (out, "]\n}\n");
}

static void
append_text (GString *out, const NbdExport *exp, GPtrArray *contexts)
{
  g_autofree char *name = nbdc_escape_text (exp->name, strlen (exp->name),
                                            NBD_MAX_STRING);
  g_autofree char *words = nbdc_eflags_to_string (exp->eflags);
  g_autofree char *human = human_size (exp->size);
  g_string_append_printf (out, "export:             \"%s\"\n", name);
  if (exp->canonical_name)
    g_string_append_printf (out, "canonical name:     \"%s\"\n",
                            exp->canonical_name);
  if (exp->description)
    g_string_append_printf (out, "description:        %s\n",
                            exp->description);
  g_string_append_printf (out, "size:               %" PRIu64 " (%s)\n",
                          exp->size, human);
  g_string_append_printf (out, "flags:              0x%x (%s)\n",
                          exp->eflags, words);
  g_string_append_printf (out, "block sizes:        minimum %u, preferred %u, "
                          "maximum %u (%s)\n", exp->min_block,
                          exp->pref_block, exp->max_block,
                          exp->block_size_from_server ? "from the server"
                          : "defaults: the server sent none");
  g_string_append_printf (out, "handshake:          %s%s\n",
                          style_name (exp->style),
                          exp->no_zeroes ? ", no zeroes" : "");
  g_string_append_printf (out, "structured replies: %s\n",
                          exp->structured ? "yes" : "no");
  g_string_append_printf (out, "replies:            %s\n",
                          nbdc_reply_mode_name (exp));
  g_string_append_printf (out, "TLS:                %s\n",
                          exp->tls ? "yes" : "no");
  g_string_append (out, "meta contexts:      ");
  if (contexts->len == 0)
    g_string_append (out, "none");
  for (guint i = 0; i < contexts->len; i++)
    g_string_append_printf (out, "%s%s", i ? ", " : "",
                            (char *) contexts->pdata[i]);
  g_string_append_c (out, '\n');
}

int
nbdfs_cmd_info (NbdfsCli *cli, GError **error)
{
  NbdExport exp = { 0 };
  g_autoptr (GPtrArray) contexts = NULL;
  if (!nbdc_query_info (&cli->nbd, &exp, &contexts, error))
    return -1;
  g_autoptr (GString) out = g_string_new (NULL);
  if (cli->json)
    append_json (out, &exp, contexts);
  else
    append_text (out, &exp, contexts);
  nbdc_export_clear (&exp);
  if (!nbdfs_output (out, "the export information", error))
    return -1;
  return 0;
}
