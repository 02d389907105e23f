/* nbdfs — parse and format where the server is (address.h; URIs per the
 * NBD URI specification, doc/uri.md in NetworkBlockDevice/nbd). */
#include <stdlib.h>
#include <string.h>

#include "nbdclient/address.h"
#include "nbdclient/error.h"
#include "nbdclient/protocol.h"

/* NBD_DEFAULT_PORT as the string getaddrinfo and URIs take. */
#define DEFAULT_PORT G_STRINGIFY (NBD_DEFAULT_PORT)

static const char examples[] =
  "expected host[:export], [ipv6][:export], /path/to/socket[:export] or "
  "nbd://host[:port]/export (nbds://, nbd+unix:///export?socket=PATH)";

static gboolean G_GNUC_PRINTF (3, 4)
bad (GError **error, const char *s, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *why = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_autofree char *shown = g_strescape (s, NULL);
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
               "bad address \"%s\": %s; %s", shown, why, examples);
  return FALSE;
}

/* Percent-decodes s[0..len) (RFC 3986 2.1). Returns NULL on a bad escape;
 * *outlen gets the decoded length (the result may hold NUL bytes). */
static char *
pct_decode (const char *s, size_t len, size_t *outlen)
{
  char *out = g_malloc (len + 1);
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] == '%') {
      if (i + 2 >= len) {
        g_free (out);
        return NULL;
      }
      int hi = g_ascii_xdigit_value (s[i + 1]);
      int lo = g_ascii_xdigit_value (s[i + 2]);
      if (hi < 0 || lo < 0) {
        g_free (out);
        return NULL;
      }
      out[o++] = (char) (hi * 16 + lo);
      i += 2;
    }
    else
      out[o++] = s[i];
  }
  out[o] = '\0';
  *outlen = o;
  return out;
}

static gboolean
valid_port (const char *p)
{
  if (*p == '\0' || strlen (p) > 5)
    return FALSE;
  for (const char *q = p; *q; q++)
    if (!g_ascii_isdigit (*q))
      return FALSE;
  long v = strtol (p, NULL, 10);
  return v >= 1 && v <= 65535;
}

/* A host name or IPv4 literal as typed: no separators or spaces. */
static gboolean
valid_host (const char *h)
{
  if (*h == '\0')
    return FALSE;
  for (const char *q = h; *q; q++)
    if (g_ascii_isspace (*q) || strchr ("/[]@?#%:", *q) || (guchar) *q < 0x20)
      return FALSE;
  return TRUE;
}

static gboolean
valid_v6 (const char *h)
{
  if (*h == '\0')
    return FALSE;
  for (const char *q = h; *q; q++)
    if (!g_ascii_isxdigit (*q) && !strchr (":.%", *q)
        && !g_ascii_isalnum (*q))  /* %zone ids like eth0 */
      return FALSE;
  return strchr (h, ':') != NULL;
}

static gboolean
check_export (const char *s, const char *name, size_t len, GError **error)
{
  if (memchr (name, '\0', len))
    return bad (error, s, "export names cannot contain NUL bytes");
  if (len > NBD_MAX_STRING)
    return bad (error, s, "the export name is longer than %d bytes",
                NBD_MAX_STRING);
  return TRUE;
}

/* host:export and friends (everything that is not a URI). */
static gboolean
parse_short (const char *s, NbdAddress *addr, GError **error)
{
  const char *colon;

  if (s[0] == '/' || g_str_has_prefix (s, "./") || g_str_has_prefix (s, "../")) {
    /* A Unix socket; the export follows the first ':' (so export names
     * may contain ':', socket paths may not). */
    colon = strchr (s, ':');
    size_t plen = colon ? (size_t) (colon - s) : strlen (s);
    addr->socket_path = g_strndup (s, plen);
    addr->socket_len = plen;
    addr->export_name = g_strdup (colon ? colon + 1 : "");
    return check_export (s, addr->export_name, strlen (addr->export_name),
                         error);
  }

  if (s[0] == '[') {
    const char *close = strchr (s, ']');
    if (close == NULL)
      return bad (error, s, "missing ']' after the IPv6 address");
    g_autofree char *host = g_strndup (s + 1, close - s - 1);
    if (!valid_v6 (host))
      return bad (error, s, "\"%s\" is not an IPv6 address", host);
    if (close[1] != '\0' && close[1] != ':')
      return bad (error, s, "expected ':' or the end after ']'");
    addr->host = g_steal_pointer (&host);
    colon = close[1] == ':' ? close + 1 : NULL;
  }
  else {
    /* A bare IPv6 literal ("::1", "fe80::2") cannot be told apart from
     * host:export except by its "::" or its many colons. */
    size_t ncolons = 0;
    for (const char *q = s; *q; q++)
      ncolons += *q == ':';
    if ((strstr (s, "::") || ncolons >= 7)
        && strspn (s, "0123456789abcdefABCDEF:.") == strlen (s))
      return bad (error, s, "an IPv6 address needs brackets, as in "
                  "[%s] or nbd://[%s]/export", s, s);
    colon = strchr (s, ':');
    addr->host = g_strndup (s, colon ? (size_t) (colon - s) : strlen (s));
    if (addr->host[0] == '\0')
      return bad (error, s, "the host name is missing");
    if (!valid_host (addr->host))
      return bad (error, s, "\"%s\" is not a valid host name", addr->host);
  }
  addr->port = g_strdup (DEFAULT_PORT);
  const char *export = colon ? colon + 1 : "";
  /* host:PORT (or host:PORT:export) is ambiguous with an export named by
   * digits; users almost always mean a port, so say how to give one. */
  size_t digits = strspn (export, "0123456789");
  if (digits > 0 && (export[digits] == '\0' || export[digits] == ':'))
    return bad (error, s, "\"%.*s\" looks like a port; for a port write "
                "nbd://HOST:%.*s/EXPORT, for an export of that name "
                "nbd://HOST/%.*s", (int) digits, export, (int) digits, export,
                (int) digits, export);
  addr->export_name = g_strdup (export);
  return check_export (s, export, strlen (export), error);
}

static gboolean
set_query (const char *s, NbdAddress *addr, const char *key,
           const char *val, size_t vlen, GError **error)
{
  gboolean has_nul = memchr (val, '\0', vlen) != NULL;
  if (strcmp (key, "socket") == 0) {
    if (vlen == 0)
      return bad (error, s, "socket= is empty");
    /* A leading NUL (%00) names a Linux abstract socket (doc/uri.md);
     * NUL anywhere else is a mistake. */
    if (memchr (val + 1, '\0', vlen - 1))
      return bad (error, s, "socket= may contain %%00 only at the start");
    g_free (addr->socket_path);
    addr->socket_path = g_memdup2 (val, vlen + 1);
    addr->socket_len = vlen;
    return TRUE;
  }
  if (has_nul)
    return bad (error, s, "%s= cannot contain %%00", key);
  if (strcmp (key, "tls-type") == 0) {
    if (strcmp (val, "anon") && strcmp (val, "x509") && strcmp (val, "psk"))
      return bad (error, s, "tls-type must be anon, x509 or psk, not \"%s\"",
                  val);
    g_free (addr->tls_type);
    addr->tls_type = g_strdup (val);
  }
  else if (strcmp (key, "tls-hostname") == 0) {
    g_free (addr->tls_hostname);
    addr->tls_hostname = g_strdup (val);
  }
  else if (strcmp (key, "tls-verify-peer") == 0) {
    if (strcmp (val, "0") == 0 || g_ascii_strcasecmp (val, "false") == 0)
      addr->tls_verify_peer = 0;
    else if (strcmp (val, "1") == 0 || g_ascii_strcasecmp (val, "true") == 0)
      addr->tls_verify_peer = 1;
    else
      return bad (error, s, "tls-verify-peer must be 0 or 1, not \"%s\"", val);
  }
  else if (strcmp (key, "tls-certificates") == 0) {
    g_free (addr->tls_certificates);
    addr->tls_certificates = g_strdup (val);
  }
  else if (strcmp (key, "tls-psk-file") == 0) {
    g_free (addr->tls_psk_file);
    addr->tls_psk_file = g_strdup (val);
  }
  else if (strcmp (key, "tls-username") == 0) {
    g_free (addr->tls_username);
    addr->tls_username = g_strdup (val);
  }
  else if (g_str_has_prefix (key, "x-"))
    g_debug ("ignoring experimental URI parameter %s", key);
  else
    return bad (error, s, "unknown URI parameter \"%s\" (known: socket, "
                "tls-type, tls-hostname, tls-verify-peer, tls-certificates, "
                "tls-psk-file, tls-username)", key);
  return TRUE;
}

static gboolean
parse_uri (const char *s, const char *scheme_end, NbdAddress *addr,
           GError **error)
{
  g_autofree char *scheme = g_ascii_strdown (s, scheme_end - s);
  gboolean is_unix, tls;
  if (strcmp (scheme, "nbd") == 0)
    is_unix = FALSE, tls = FALSE;
  else if (strcmp (scheme, "nbds") == 0)
    is_unix = FALSE, tls = TRUE;
  else if (strcmp (scheme, "nbd+unix") == 0)
    is_unix = TRUE, tls = FALSE;
  else if (strcmp (scheme, "nbds+unix") == 0)
    is_unix = TRUE, tls = TRUE;
  else
    return bad (error, s, "unknown URI scheme \"%s\" (use nbd, nbds, nbd+unix "
                "or nbds+unix)", scheme);
  addr->is_uri = TRUE;
  addr->tls = tls ? NBDC_TLS_REQUIRE : NBDC_TLS_DEFAULT;

  const char *p = scheme_end + 3;           /* past "://" */
  if (strchr (p, '#'))
    return bad (error, s, "NBD URIs have no #fragment");
  const char *auth_end = p + strcspn (p, "/?");
  const char *path = auth_end;
  const char *query = strchr (auth_end, '?');
  const char *path_end = query ? query : path + strlen (path);

  /* Authority: [userinfo@]host[:port] */
  g_autofree char *auth = g_strndup (p, auth_end - p);
  char *hostport = auth;
  char *at = strrchr (auth, '@');
  if (at) {
    size_t ulen;
    *at = '\0';
    g_autofree char *user = pct_decode (auth, strlen (auth), &ulen);
    if (user == NULL)
      return bad (error, s, "bad %%-escape in the user name");
    if (ulen == 0 || memchr (user, '\0', ulen))
      return bad (error, s, "empty or invalid user name before '@'");
    addr->tls_username = g_steal_pointer (&user);
    hostport = at + 1;
  }
  if (is_unix) {
    if (*hostport)
      return bad (error, s, "%s URIs take no host (the socket is given by "
                  "?socket=PATH), as in %s:///export?socket=/tmp/nbd.sock",
                  scheme, scheme);
  }
  else {
    char *port = NULL;
    if (hostport[0] == '[') {
      char *close = strchr (hostport, ']');
      if (close == NULL)
        return bad (error, s, "missing ']' after the IPv6 address");
      *close = '\0';
      /* RFC 6874: a zone is written %25eth0 inside the brackets. */
      size_t vlen;
      g_autofree char *v6 = pct_decode (hostport + 1, strlen (hostport + 1),
                                        &vlen);
      if (v6 == NULL || vlen != strlen (v6) || !valid_v6 (v6))
        return bad (error, s, "\"%s\" is not an IPv6 address", hostport + 1);
      addr->host = g_steal_pointer (&v6);
      if (close[1] == ':')
        port = close + 2;
      else if (close[1] != '\0')
        return bad (error, s, "expected ':PORT' or '/' after ']'");
    }
    else {
      char *colon = strchr (hostport, ':');
      if (colon) {
        *colon = '\0';
        port = colon + 1;
      }
      size_t hlen;
      g_autofree char *host = pct_decode (hostport, strlen (hostport), &hlen);
      if (host == NULL || hlen != strlen (host))
        return bad (error, s, "bad %%-escape in the host name");
      if (host[0] == '\0')
        return bad (error, s, "the host is missing, as in %s://HOST/export",
                    scheme);
      if (!valid_host (host))
        return bad (error, s, "\"%s\" is not a valid host name", host);
      addr->host = g_steal_pointer (&host);
    }
    if (port && *port) {
      if (!valid_port (port))
        return bad (error, s, "the port must be a number 1-65535, not \"%s\"",
                    port);
      addr->port = g_strdup (port);
    }
    else
      addr->port = g_strdup (DEFAULT_PORT);
  }

  /* Path: the export name is the path minus its leading '/'. */
  if (path_end > path) {
    size_t elen;
    char *export = pct_decode (path + 1, path_end - path - 1, &elen);
    if (export == NULL)
      return bad (error, s, "bad %%-escape in the export name");
    addr->export_name = export;
    if (!check_export (s, export, elen, error))
      return FALSE;
  }
  else
    addr->export_name = g_strdup ("");

  /* Query: key=value&key=value */
  if (query) {
    g_auto (GStrv) pairs = g_strsplit (query + 1, "&", -1);
    for (char **kv = pairs; *kv; kv++) {
      if (**kv == '\0')
        continue;
      char *eq = strchr (*kv, '=');
      size_t klen, vlen = 0;
      g_autofree char *key = pct_decode (*kv, eq ? (size_t) (eq - *kv)
                                         : strlen (*kv), &klen);
      g_autofree char *val = eq ? pct_decode (eq + 1, strlen (eq + 1), &vlen)
                                : g_strdup ("");
      if (key == NULL || val == NULL)
        return bad (error, s, "bad %%-escape in the query");
      if (strlen (key) != klen)
        return bad (error, s, "bad query parameter name");
      if (strcmp (key, "socket") == 0 && !is_unix)
        return bad (error, s, "socket= is only for nbd+unix:// and "
                    "nbds+unix:// URIs");
      if (!set_query (s, addr, key, val, vlen, error))
        return FALSE;
    }
  }
  if (is_unix && addr->socket_path == NULL)
    return bad (error, s, "%s URIs need ?socket=PATH, as in "
                "%s:///export?socket=/tmp/nbd.sock", scheme, scheme);
  return TRUE;
}

gboolean
nbdc_address_parse (const char *s, NbdAddress *addr, GError **error)
{
  memset (addr, 0, sizeof *addr);
  addr->tls_verify_peer = -1;
  gboolean ok;

  if (s == NULL || *s == '\0')
    ok = bad (error, "", "it is empty");
  else {
    /* A scheme is ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) then "://"
     * (RFC 3986 3.1). */
    size_t n = g_ascii_isalpha (s[0])
      ? strspn (s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                "0123456789+-.") : 0;
    if (n > 0 && strncmp (s + n, "://", 3) == 0)
      ok = parse_uri (s, s + n, addr, error);
    else if (n > 0 && s[n] == ':' && s[n + 1] == '/' && s[n + 2] != '/'
             && g_str_has_prefix (s, "nbd"))
      ok = bad (error, s, "a URI needs \"://\" after the scheme");
    else
      ok = parse_short (s, addr, error);
  }
  if (!ok)
    nbdc_address_clear (addr);
  return ok;
}

void
nbdc_address_clear (NbdAddress *addr)
{
  g_clear_pointer (&addr->host, g_free);
  g_clear_pointer (&addr->port, g_free);
  g_clear_pointer (&addr->socket_path, g_free);
  g_clear_pointer (&addr->export_name, g_free);
  g_clear_pointer (&addr->tls_type, g_free);
  g_clear_pointer (&addr->tls_hostname, g_free);
  g_clear_pointer (&addr->tls_certificates, g_free);
  g_clear_pointer (&addr->tls_psk_file, g_free);
  g_clear_pointer (&addr->tls_username, g_free);
  addr->socket_len = 0;
}

void
nbdc_address_copy (NbdAddress *dst, const NbdAddress *src)
{
  *dst = *src;
  dst->host = g_strdup (src->host);
  dst->port = g_strdup (src->port);
  dst->socket_path = src->socket_path
    ? g_memdup2 (src->socket_path, (src->socket_len ? src->socket_len
                                    : strlen (src->socket_path)) + 1)
    : NULL;
  dst->export_name = g_strdup (src->export_name);
  dst->tls_type = g_strdup (src->tls_type);
  dst->tls_hostname = g_strdup (src->tls_hostname);
  dst->tls_certificates = g_strdup (src->tls_certificates);
  dst->tls_psk_file = g_strdup (src->tls_psk_file);
  dst->tls_username = g_strdup (src->tls_username);
}

char *
nbdc_address_describe (const NbdAddress *addr)
{
  if (addr->socket_path) {
    size_t len = addr->socket_len ? addr->socket_len
      : strlen (addr->socket_path);
    if (len > 0 && addr->socket_path[0] == '\0')
      return g_strdup_printf ("unix:@%.*s", (int) len - 1,
                              addr->socket_path + 1);
    return g_strdup_printf ("unix:%s", addr->socket_path);
  }
  const char *port = nbdc_address_port (addr);
  if (addr->host && strchr (addr->host, ':'))
    return g_strdup_printf ("[%s]:%s", addr->host, port);
  return g_strdup_printf ("%s:%s", addr->host ? addr->host : "?", port);
}

const char *
nbdc_address_port (const NbdAddress *addr)
{
  return addr->port ? addr->port : DEFAULT_PORT;
}

/* Characters a URI path segment may hold unescaped besides the unreserved
 * ones (RFC 3986 3.3: pchar), and '/' between segments: the parser takes
 * the whole path after the first '/' as the export name. */
#define PATH_CHARS G_URI_RESERVED_CHARS_SUBCOMPONENT_DELIMITERS ":@/"

char *
nbdc_address_to_uri (const NbdAddress *addr, gboolean tls)
{
  const char *s = tls ? "s" : "";
  g_autofree char *export =
    g_uri_escape_string (addr->export_name ? addr->export_name : "",
                         PATH_CHARS, FALSE);

  if (addr->socket_path) {
    size_t len = addr->socket_len ? addr->socket_len
      : strlen (addr->socket_path);
    /* An abstract socket's name starts with NUL: %00 (the URI spec's
     * form), then the rest of the name. */
    gboolean abstract = len > 0 && addr->socket_path[0] == '\0';
    g_autofree char *rest = g_strndup (addr->socket_path + abstract,
                                       len - abstract);
    g_autofree char *path = g_uri_escape_string (rest, "/", FALSE);
    return g_strdup_printf ("nbd%s+unix:///%s?socket=%s%s", s, export,
                            abstract ? "%00" : "", path);
  }
  const char *host = addr->host ? addr->host : "";
  /* An IPv6 literal goes in brackets; its zone ("%eth0") as %25eth0
   * (RFC 6874). */
  gboolean v6 = strchr (host, ':') != NULL;
  g_autofree char *h = g_uri_escape_string (host, v6 ? ":" : "", FALSE);
  return g_strdup_printf ("nbd%s://%s%s%s:%s/%s", s, v6 ? "[" : "", h,
                          v6 ? "]" : "", nbdc_address_port (addr), export);
}
