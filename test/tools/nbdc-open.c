/* test tool: nbdc-open ADDRESS [tls-mode] — runs nbdc_open() (connect +
 * full handshake into transmission), prints what was negotiated as
 * key=value lines, then leaves with NBD_CMD_DISC. Exit 1 with the error
 * message on failure. For integration tests of the negotiator. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "nbdclient/negotiate.h"
#include "nbdclient/protocol.h"

int
main (int argc, char **argv)
{
  NbdcOptions opts = { 0 };
  NbdExport exp = { 0 };
  g_autoptr (GError) error = NULL;

  if (argc < 2) {
    fprintf (stderr, "usage: nbdc-open ADDRESS [off|allow|require] "
             "[no-sr] [no-meta]\n");
    return 2;
  }
  if (g_getenv ("NBDC_DEBUG"))
    g_setenv ("G_MESSAGES_DEBUG", "all", TRUE);
  if (!nbdc_address_parse (argv[1], &opts.addr, &error)) {
    fprintf (stderr, "nbdc-open: %s\n", error->message);
    return 2;
  }
  opts.tls = opts.addr.tls == NBDC_TLS_REQUIRE ? NBDC_TLS_REQUIRE
    : NBDC_TLS_OFF;
  for (int i = 2; i < argc; i++) {
    if (strcmp (argv[i], "allow") == 0) opts.tls = NBDC_TLS_ALLOW;
    else if (strcmp (argv[i], "require") == 0) opts.tls = NBDC_TLS_REQUIRE;
    else if (strcmp (argv[i], "off") == 0) opts.tls = NBDC_TLS_OFF;
    else if (strcmp (argv[i], "no-sr") == 0) opts.no_structured = TRUE;
    else if (strcmp (argv[i], "no-meta") == 0) opts.no_meta = TRUE;
  }
  opts.handshake_timeout = 10;
  NbdTransport *t = nbdc_open (&opts, &exp, &error);
  if (t == NULL) {
    fprintf (stderr, "nbdc-open: %s\n", error->message);
    nbdc_options_clear (&opts);
    return 1;
  }
  printf ("size=%" PRIu64 "\neflags=0x%x\nmin_block=%u\npref_block=%u\n"
          "max_block=%u\nblock_size_from_server=%d\nstyle=%d\n"
          "structured=%d\nbase_allocation=%d\nused_export_name=%d\ntls=%d\n"
          "canonical_name=%s\ndescription=%s\n",
          exp.size, exp.eflags, exp.min_block, exp.pref_block, exp.max_block,
          exp.block_size_from_server, exp.style, exp.structured,
          exp.base_allocation, exp.used_export_name, exp.tls,
          exp.canonical_name ? exp.canonical_name : "",
          exp.description ? exp.description : "");
  struct nbd_request req = {
    .magic = GUINT32_TO_BE (NBD_REQUEST_MAGIC),
    .type = GUINT16_TO_BE (NBD_CMD_DISC),
  };
  nbdc_write_full (t, &req, sizeof req, 0, "sending disconnect", NULL);
  nbdc_transport_free (t);
  nbdc_export_clear (&exp);
  nbdc_options_clear (&opts);
  return 0;
}
