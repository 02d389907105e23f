/* nbdfs — where the server is: host:export, bare host, and NBD URIs.
 *
 * Accepted forms (the URIs per the NBD URI specification, doc/uri.md in
 * NetworkBlockDevice/nbd):
 *   host                      default export on port 10809
 *   host:export               the short form users type
 *   host:port:export?         NOT accepted: ambiguous; use a URI for a port
 *   [v6addr]:export, [v6addr] IPv6 literals in brackets
 *   /path/to/socket[:export]  a Unix socket (leading '/' or './')
 *   nbd://host[:port][/export][?query]
 *   nbds://...                 TLS required
 *   nbd+unix:///export?socket=PATH, nbds+unix:///export?socket=PATH
 * URI export names are percent-decoded; the path minus its leading '/' is
 * the export name (so nbd://h//disk names "/disk"). Query parameters:
 * socket, tls-type, tls-hostname, tls-verify-peer, tls-certificates,
 * tls-psk-file, tls-username; unknown non "x-" parameters are an error.
 */
#ifndef NBDCLIENT_ADDRESS_H
#define NBDCLIENT_ADDRESS_H

#include <glib.h>

typedef enum {
  NBDC_TLS_DEFAULT = 0,  /* not said: plain, unless the URI scheme is nbds */
  NBDC_TLS_OFF,          /* never STARTTLS */
  NBDC_TLS_ALLOW,        /* STARTTLS if the server offers it, else plain */
  NBDC_TLS_REQUIRE,      /* TLS or fail; never fall back to clear text */
} NbdcTlsMode;

typedef struct {
  /* Exactly one of host or socket_path is set. */
  char *host;            /* TCP host name or literal (no brackets) */
  char *port;            /* TCP port/service; NBD_DEFAULT_PORT by default */
  char *socket_path;     /* Unix socket path (may start with NUL for abstract:
                            then socket_len says how long it is) */
  size_t socket_len;
  char *export_name;     /* never NULL; "" = the default export */
  NbdcTlsMode tls;       /* REQUIRE for nbds schemes, else DEFAULT */
  /* TLS parameters from URI query strings; NULL when absent. */
  char *tls_type;        /* "anon", "x509" or "psk" */
  char *tls_hostname;
  int tls_verify_peer;   /* -1 unset, 0, 1 */
  char *tls_certificates;
  char *tls_psk_file;
  char *tls_username;    /* also from URI userinfo */
  gboolean is_uri;       /* came from a URI (for messages) */
} NbdAddress;

/* Parses S into *addr (which the caller zero-initialises). Returns FALSE with
 * NBDFS_ERROR_USAGE and a one-line message saying what is wrong and what a
 * correct address looks like. */
gboolean nbdc_address_parse (const char *s, NbdAddress *addr, GError **error);

/* Frees the strings inside (not addr itself). */
void nbdc_address_clear (NbdAddress *addr);
void nbdc_address_copy (NbdAddress *dst, const NbdAddress *src);

/* "host:port", "[::1]:10809" or "unix:/path", for messages. Caller frees. */
char *nbdc_address_describe (const NbdAddress *addr);

/* The TCP port to connect to: the one given, else NBD_DEFAULT_PORT. */
const char *nbdc_address_port (const NbdAddress *addr);

/* The one NBD URI formatter: "nbd[s]://host:port/export" or
 * "nbd[s]+unix:///export?socket=PATH" (abstract sockets as %00NAME), with
 * the "s" when tls. nbdc_address_parse reads it back to the same host,
 * port, socket and export name (test/unit/test-address.c). TLS query
 * parameters and the user name are left out: the result names the export,
 * not how to log in (kernel mode gives it to the driver as the backend
 * identifier, shown in sysfs). Caller frees. */
char *nbdc_address_to_uri (const NbdAddress *addr, gboolean tls);

#endif
