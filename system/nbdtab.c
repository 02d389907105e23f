/* nbdfs — nbd-client's /etc/nbdtab (see nbdtab.h).
 *
 * Options of nbd-client (nbdtab(5)) and what nbdfs does with them:
 *   honoured: conns=N (--connections), timeout=S (--timeout), persist
 *     (--persist), port=P, unix (HOST is a socket path), tlshostname=H
 *     (--tls-hostname), certfile=/keyfile=/cacertfile= (TLS required;
 *     nbdfs reads certificates from one directory, so the files must be
 *     that directory's client-cert.pem, client-key.pem and ca-cert.pem:
 *     anything else is refused with a sentence saying so), tls (TLS
 *     required), _anything (reserved for local use: ignored silently, as
 *     nbd-client does);
 *   ignored with a warning: bs=N (the block size comes from the server's
 *     NBD_INFO_BLOCK_SIZE, which the driver must honour), no_optgo (we
 *     fall back to NBD_OPT_EXPORT_NAME by ourselves), nofork (the unit
 *     runs us in the foreground anyway);
 *   refused: swap (we do not lock ourselves in memory: a swap device whose
 *     relay or supervisor can be paged out can deadlock), sdp (gone from
 *     nbd-client too), and anything unknown: a mistyped "persits" must not
 *     attach a device that silently never reconnects.
 * nbdfs's own long options are accepted too (connections=, read-only,
 * tls=, tls-certificates=, tls-psk-file=, tls-username=, tls-hostname=,
 * tls-no-verify, connect-timeout=, ioctl); nbd-client warns about them. */
#include <errno.h>
#include <string.h>

#include "nbdclient/error.h"
#include "system/nbdtab.h"

void
nbdfs_nbdtab_entry_clear (NbdfsNbdtabEntry *e)
{
  g_free (e->device);
  g_free (e->address);
  g_strfreev (e->args);
  g_strfreev (e->warnings);
  memset (e, 0, sizeof *e);
}

static const char *
short_name (const char *device)
{
  return g_str_has_prefix (device, "/dev/") ? device + 5 : device;
}

/* nbdfs options that take a value / take none. */
static const char *const own_valued[] = {
  "connections", "tls", "tls-certificates", "tls-psk-file", "tls-username",
  "tls-hostname", "connect-timeout",
};
static const char *const own_flags[] = {
  "read-only", "tls-no-verify", "ioctl",
};

typedef struct {
  const char *filename;
  unsigned line;
  gboolean unix_socket;
  char *port;
  char *certfile, *keyfile, *cacertfile;
  gboolean tls;
  GPtrArray *args;
  GPtrArray *warnings;
} Line;

static gboolean
line_error (GError **error, const Line *l, const char *fmt, ...)
  G_GNUC_PRINTF (3, 4);

static gboolean
line_error (GError **error, const Line *l, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE, "%s line %u: %s",
               l->filename, l->line, msg);
  return FALSE;
}

static gboolean
positive_number (const char *s)
{
  if (s == NULL || *s == '\0')
    return FALSE;
  for (const char *p = s; *p; p++)
    if (!g_ascii_isdigit (*p))
      return FALSE;
  return strlen (s) <= 9;
}

static gboolean
one_option (Line *l, const char *opt, GError **error)
{
  const char *eq = strchr (opt, '=');
  g_autofree char *key = eq ? g_strndup (opt, eq - opt) : g_strdup (opt);
  const char *val = eq ? eq + 1 : NULL;

  if (key[0] == '_')
    return TRUE;
  if (strcmp (key, "conns") == 0 || strcmp (key, "timeout") == 0
      || strcmp (key, "port") == 0) {
    if (!positive_number (val))
      return line_error (error, l, "%s needs a number (%s=N), not '%s'",
                         key, key, val ? val : "");
    if (strcmp (key, "port") == 0) {
      g_free (l->port);
      l->port = g_strdup (val);
    }
    else
      g_ptr_array_add (l->args, g_strdup_printf (
        "--%s=%s", strcmp (key, "conns") == 0 ? "connections" : "timeout",
        val));
    return TRUE;
  }
  if (strcmp (key, "persist") == 0 || strcmp (key, "unix") == 0
      || strcmp (key, "tls") == 0 || strcmp (key, "no_optgo") == 0
      || strcmp (key, "nofork") == 0 || strcmp (key, "swap") == 0
      || strcmp (key, "sdp") == 0) {
    if (val != NULL)
      return line_error (error, l, "option %s takes no value", key);
    if (strcmp (key, "persist") == 0)
      g_ptr_array_add (l->args, g_strdup ("--persist"));
    else if (strcmp (key, "unix") == 0)
      l->unix_socket = TRUE;
    else if (strcmp (key, "tls") == 0)
      l->tls = TRUE;
    else if (strcmp (key, "swap") == 0)
      return line_error (error, l, "option swap is not supported: nbdfs "
                         "does not lock itself in memory, and swapping "
                         "to a device it serves could deadlock");
    else if (strcmp (key, "sdp") == 0)
      return line_error (error, l, "option sdp (Sockets Direct Protocol) "
                         "is not supported");
    else
      g_ptr_array_add (l->warnings, g_strdup_printf (
        "%s line %u: option %s ignored (%s)", l->filename, l->line, key,
        strcmp (key, "no_optgo") == 0
        ? "nbdfs falls back from NBD_OPT_GO by itself"
        : "nbdfs@.service runs nbdfs in the foreground"));
    return TRUE;
  }
  if (strcmp (key, "bs") == 0) {
    if (!positive_number (val))
      return line_error (error, l, "bs needs a number (bs=4096)");
    g_ptr_array_add (l->warnings, g_strdup_printf (
      "%s line %u: bs=%s ignored: the device takes the block size the "
      "server asks for", l->filename, l->line, val));
    return TRUE;
  }
  if (strcmp (key, "certfile") == 0 || strcmp (key, "keyfile") == 0
      || strcmp (key, "cacertfile") == 0 || strcmp (key, "tlshostname") == 0) {
    if (val == NULL || *val == '\0')
      return line_error (error, l, "%s needs a value (%s=...)", key, key);
    if (strcmp (key, "tlshostname") == 0) {
      g_ptr_array_add (l->args, g_strdup_printf ("--tls-hostname=%s", val));
      l->tls = TRUE;
      return TRUE;
    }
    char **slot = key[0] == 'c' && key[1] == 'e' ? &l->certfile
      : key[0] == 'k' ? &l->keyfile : &l->cacertfile;
    g_free (*slot);
    *slot = g_strdup (val);
    l->tls = TRUE;
    return TRUE;
  }
  for (size_t i = 0; i < G_N_ELEMENTS (own_valued); i++)
    if (strcmp (key, own_valued[i]) == 0) {
      if (val == NULL || *val == '\0')
        return line_error (error, l, "%s needs a value (%s=...)", key, key);
      g_ptr_array_add (l->args, g_strdup_printf ("--%s=%s", key, val));
      return TRUE;
    }
  for (size_t i = 0; i < G_N_ELEMENTS (own_flags); i++)
    if (strcmp (key, own_flags[i]) == 0) {
      if (val != NULL)
        return line_error (error, l, "option %s takes no value", key);
      g_ptr_array_add (l->args, g_strdup_printf ("--%s", key));
      return TRUE;
    }
  return line_error (error, l, "unknown option '%s' (see nbdfs(1), "
                     "NBDTAB)", opt);
}

/* certfile=/keyfile=/cacertfile= -> one --tls-certificates=DIR, if the
 * files are DIR's ca-cert.pem, client-cert.pem and client-key.pem. */
static gboolean
certificate_dir (Line *l, GError **error)
{
  static const struct { size_t off; const char *name; const char *key; }
  files[] = {
    { G_STRUCT_OFFSET (Line, cacertfile), "ca-cert.pem", "cacertfile" },
    { G_STRUCT_OFFSET (Line, certfile), "client-cert.pem", "certfile" },
    { G_STRUCT_OFFSET (Line, keyfile), "client-key.pem", "keyfile" },
  };
  g_autofree char *dir = NULL;
  gboolean any = FALSE;

  for (size_t i = 0; i < G_N_ELEMENTS (files); i++) {
    const char *path = G_STRUCT_MEMBER (char *, l, files[i].off);
    if (path == NULL)
      continue;
    any = TRUE;
    g_autofree char *base = g_path_get_basename (path);
    g_autofree char *d = g_path_get_dirname (path);
    if (strcmp (base, files[i].name) != 0)
      return line_error (error, l, "%s=%s: nbdfs reads certificates from "
                         "one directory under fixed names; copy or link "
                         "the file to DIR/%s and write "
                         "tls-certificates=DIR", files[i].key, path,
                         files[i].name);
    if (dir != NULL && strcmp (dir, d) != 0)
      return line_error (error, l, "%s=%s is not in %s with the other "
                         "certificate files: nbdfs reads them from one "
                         "directory (tls-certificates=DIR)", files[i].key,
                         path, dir);
    if (dir == NULL)
      dir = g_steal_pointer (&d);
  }
  if (l->certfile != NULL && l->keyfile == NULL)
    return line_error (error, l, "certfile= without keyfile=");
  if (l->keyfile != NULL && l->certfile == NULL)
    return line_error (error, l, "keyfile= without certfile=");
  if (any)
    g_ptr_array_add (l->args, g_strdup_printf ("--tls-certificates=%s", dir));
  return TRUE;
}

static char *
make_address (const Line *l, const char *host, const char *export)
{
  g_autofree char *exp = g_uri_escape_string (export, NULL, FALSE);
  if (l->unix_socket) {
    g_autofree char *sock = g_uri_escape_string (host, "/", FALSE);
    return g_strdup_printf ("nbd%s+unix:///%s?socket=%s", l->tls ? "s" : "",
                            exp, sock);
  }
  gboolean v6 = strchr (host, ':') != NULL && host[0] != '[';
  return g_strdup_printf ("nbd%s://%s%s%s%s%s/%s", l->tls ? "s" : "",
                          v6 ? "[" : "", host, v6 ? "]" : "",
                          l->port ? ":" : "", l->port ? l->port : "", exp);
}

static gboolean
translate (Line *l, char **fields, guint n, NbdfsNbdtabEntry *out,
           GError **error)
{
  if (n < 3)
    return line_error (error, l, "expected DEVICE HOST EXPORT [OPTIONS], "
                       "found %u field(s)", n);
  if (n > 4)
    return line_error (error, l, "expected DEVICE HOST EXPORT [OPTIONS], "
                       "found %u fields (options are separated by commas, "
                       "not blanks)", n);
  if (n == 4) {
    g_auto (GStrv) opts = g_strsplit (fields[3], ",", -1);
    for (char **o = opts; *o; o++)
      if (**o && !one_option (l, *o, error))
        return FALSE;
  }
  if (l->port && l->unix_socket)
    return line_error (error, l, "port= and unix do not go together");
  if (l->unix_socket && !g_path_is_absolute (fields[1]))
    return line_error (error, l, "with unix, HOST is the server's socket: "
                       "an absolute path, not '%s'", fields[1]);
  if (!certificate_dir (l, error))
    return FALSE;
  out->device = g_strconcat ("/dev/", fields[0], NULL);
  out->address = make_address (l, fields[1], fields[2]);
  out->line = l->line;
  g_ptr_array_add (l->args, NULL);
  out->args = (char **) g_ptr_array_free (g_steal_pointer (&l->args), FALSE);
  g_ptr_array_add (l->warnings, NULL);
  out->warnings = (char **) g_ptr_array_free (
    g_steal_pointer (&l->warnings), FALSE);
  return TRUE;
}

gboolean
nbdfs_nbdtab_lookup (const char *text, const char *filename,
                     const char *device, NbdfsNbdtabEntry *out,
                     GError **error)
{
  const char *want = short_name (device);
  g_auto (GStrv) lines = g_strsplit (text, "\n", -1);

  memset (out, 0, sizeof *out);
  for (guint i = 0; lines[i]; i++) {
    char *hash = strchr (lines[i], '#');
    if (hash)
      *hash = '\0';
    g_auto (GStrv) fields = g_regex_split_simple ("[ \t\r]+",
                                                  g_strstrip (lines[i]), 0, 0);
    guint n = g_strv_length (fields);
    if (n == 0 || fields[0][0] == '\0' || strcmp (fields[0], want) != 0)
      continue;
    Line l = { .filename = filename, .line = i + 1,
               .args = g_ptr_array_new_with_free_func (g_free),
               .warnings = g_ptr_array_new_with_free_func (g_free) };
    gboolean ok = translate (&l, fields, n, out, error);
    if (l.args)
      g_ptr_array_free (l.args, TRUE);
    if (l.warnings)
      g_ptr_array_free (l.warnings, TRUE);
    g_free (l.port);
    g_free (l.certfile);
    g_free (l.keyfile);
    g_free (l.cacertfile);
    if (!ok)
      nbdfs_nbdtab_entry_clear (out);
    return ok;
  }
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
               "%s: no line for %s (expected \"%s HOST EXPORT [OPTIONS]\")",
               filename, want, want);
  return FALSE;
}

gboolean
nbdfs_nbdtab_load (const char *path, const char *device,
                   NbdfsNbdtabEntry *out, GError **error)
{
  g_autofree char *text = NULL;
  g_autoptr (GError) e = NULL;

  if (!g_file_get_contents (path, &text, NULL, &e)) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE, "%s", e->message);
    return FALSE;
  }
  return nbdfs_nbdtab_lookup (text, path, device, out, error);
}
