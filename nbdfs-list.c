/* nbdfs --list ADDRESS [--json]: the server's exports (NBD_OPT_LIST). */
#include <stdio.h>

#include "nbdfs.h"
#include "nbdclient/error.h"

int
nbdfs_cmd_list (NbdfsCli *cli, GError **error)
{
  g_autoptr (GPtrArray) entries = NULL;
  if (!nbdc_list_exports (&cli->nbd, &entries, error))
    return -1;

  g_autoptr (GString) out = g_string_new (NULL);
  if (cli->json) {
    g_string_append (out, "[");
    for (guint i = 0; i < entries->len; i++) {
      NbdExportEntry *e = entries->pdata[i];
      g_string_append (out, i ? ",\n  {" : "\n  {");
      /* The exact name when JSON can carry it (so a script can open the
       * export by it); else the escaped one, flagged. */
      g_string_append (out, "\"name\": ");
      if (nbdfs_json_can_carry (e->raw_name, e->raw_name_len))
        nbdfs_json_append_string (out, e->raw_name);
      else {
        nbdfs_json_append_string (out, e->name);
        g_string_append (out, ", \"name_escaped\": true");
      }
      g_string_append (out, ", \"description\": ");
      nbdfs_json_append_string (out, e->description);
      g_string_append (out, "}");
    }
    g_string_append (out, entries->len ? "\n]\n" : "]\n");
  }
  else {
    /* One export per line; its description after a tab, if any. Names
     * are escaped (nbdc_escape_text), so one line is one export; the
     * default export (empty name) shows as "". */
    for (guint i = 0; i < entries->len; i++) {
      NbdExportEntry *e = entries->pdata[i];
      g_string_append (out, *e->name ? e->name : "\"\"");
      if (e->description && *e->description)
        g_string_append_printf (out, "\t%s", e->description);
      g_string_append_c (out, '\n');
    }
  }
  if (!nbdfs_output (out, "the export list", error))
    return -1;
  return 0;
}
