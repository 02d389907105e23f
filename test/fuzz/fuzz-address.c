/* libFuzzer target: nbdc_address_parse on arbitrary strings.
 *
 * Whatever the string, parsing must not crash, overflow or leak, and a
 * successful parse must satisfy address.h's contract: exactly one of host
 * and socket_path, export_name never NULL, port set for TCP; describing
 * and copying the result must work too. A failed parse must leave an error
 * with a message and nothing to free.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>
#include "nbdclient/address.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  /* Command-line arguments are NUL-terminated: cut at the first NUL. */
  char *s = g_strndup ((const char *) data, size);
  NbdAddress a = { 0 };
  GError *err = NULL;
  if (nbdc_address_parse (s, &a, &err)) {
    if (err)
      abort ();
    if ((a.host == NULL) == (a.socket_path == NULL))
      abort ();
    if (a.export_name == NULL)
      abort ();
    if (a.host && a.port == NULL)
      abort ();
    if (a.socket_path && a.socket_len == 0 && a.socket_path[0] == '\0')
      abort ();
    if (a.tls_verify_peer < -1 || a.tls_verify_peer > 1)
      abort ();
    char *desc = nbdc_address_describe (&a);
    if (desc == NULL)
      abort ();
    g_free (desc);
    NbdAddress b = { 0 };
    nbdc_address_copy (&b, &a);
    if (strcmp (a.export_name, b.export_name) != 0)
      abort ();
    nbdc_address_clear (&b);
  }
  else {
    if (err == NULL || err->message == NULL || err->message[0] == '\0')
      abort ();
    g_error_free (err);
  }
  nbdc_address_clear (&a);
  g_free (s);
  return 0;
}
