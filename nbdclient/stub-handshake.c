/* TEMPORARY: placeholders until address.c / negotiate.c land (delete this
 * file then). */
#include "nbdclient/error.h"
#include "nbdclient/negotiate.h"

gboolean
nbdc_address_parse (const char *s, NbdAddress *addr, GError **error)
{
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED,
               "address parsing is not built yet");
  return FALSE;
}

void
nbdc_options_clear (NbdcOptions *opts)
{
}
