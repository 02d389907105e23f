/* nbdfs — fstab mount options (see mount-options.h).
 *
 * What arrives: mount(8) reads the fstab line, expands "user"/"users" into
 * noexec,nosuid,nodev, resolves ro/rw, and runs mount.fuse3, which drops
 * the options meant for it and for systemd (_netdev, nofail, noauto,
 * x-systemd.*, comment=...) and runs "nbdfs ADDRESS MNT -o REST". We drop
 * those again anyway, so "nbdfs ... -o _netdev" typed by hand, or an older
 * mount.fuse3, gives the same result instead of libfuse's "unknown
 * option". */
#include <string.h>

#include "nbdclient/error.h"
#include "system/mount-options.h"

typedef enum { TAKES_VALUE, FLAG } Kind;

static const struct {
  const char *key;
  Kind kind;
} ours[] = {
  { "connections", TAKES_VALUE },
  { "name", TAKES_VALUE },
  { "timeout", TAKES_VALUE },
  { "reconnect", TAKES_VALUE },
  { "connect-timeout", TAKES_VALUE },
  { "tls", TAKES_VALUE },
  { "tls-certificates", TAKES_VALUE },
  { "tls-psk-file", TAKES_VALUE },
  { "tls-username", TAKES_VALUE },
  { "tls-hostname", TAKES_VALUE },
  { "pidfile", TAKES_VALUE },
  { "read-only", FLAG },
  { "all", FLAG },
  { "tls-no-verify", FLAG },
  { "verbose", FLAG },
};

/* Read by mount(8), mount.fuse3 or systemd-fstab-generator, never by the
 * file system. */
static const char *const dropped[] = {
  "defaults", "auto", "noauto", "nofail", "user", "users", "nouser",
  "owner", "group", "noowner", "nogroup",
};
static const char *const dropped_prefix[] = {
  "user=", "comment=", "x-", "_",
};

/* Options that mean something only to kernel mode. */
static const struct {
  const char *key;
  const char *hint;
} kernel_only[] = {
  { "persist", "FUSE mounts ride out a lost server with reconnect=SECONDS" },
  { "ioctl", "it selects the kernel-mode interface" },
  { "kernel", "attach /dev/nbdN with nbdfs --kernel or nbdfs@.service" },
};

/* Splits an option list at unescaped commas; "\," and "\\" are unescaped
 * in *values (what we pass on as our option values) and kept as written
 * in *raw (what goes back to libfuse, which unescapes itself). */
static void
split_list (const char *list, GPtrArray *raw, GPtrArray *values)
{
  GString *r = g_string_new (NULL), *v = g_string_new (NULL);
  for (const char *p = list;; p++) {
    if (*p == '\\' && p[1] != '\0') {
      g_string_append_c (r, *p);
      g_string_append_c (r, p[1]);
      g_string_append_c (v, p[1]);
      p++;
      continue;
    }
    if (*p == ',' || *p == '\0') {
      if (r->len > 0) {
        g_ptr_array_add (raw, g_strdup (r->str));
        g_ptr_array_add (values, g_strdup (v->str));
      }
      g_string_truncate (r, 0);
      g_string_truncate (v, 0);
      if (*p == '\0')
        break;
      continue;
    }
    g_string_append_c (r, *p);
    g_string_append_c (v, *p);
  }
  g_string_free (r, TRUE);
  g_string_free (v, TRUE);
}

static gboolean
is_dropped (const char *opt)
{
  for (size_t i = 0; i < G_N_ELEMENTS (dropped); i++)
    if (strcmp (opt, dropped[i]) == 0)
      return TRUE;
  for (size_t i = 0; i < G_N_ELEMENTS (dropped_prefix); i++)
    if (g_str_has_prefix (opt, dropped_prefix[i]))
      return TRUE;
  return FALSE;
}

/* One option: appends to out (our long options) or fuse (kept). */
static gboolean
translate_one (const char *raw, const char *value, GPtrArray *out,
               GPtrArray *fuse, GError **error)
{
  const char *eq = strchr (value, '=');
  g_autofree char *key = eq ? g_strndup (value, eq - value)
    : g_strdup (value);
  const char *arg = eq ? eq + 1 : NULL;

  if (strcmp (value, "ro") == 0) {
    g_ptr_array_add (out, g_strdup ("--read-only"));
    g_ptr_array_add (fuse, g_strdup (raw));
    return TRUE;
  }
  for (size_t i = 0; i < G_N_ELEMENTS (ours); i++) {
    if (strcmp (key, ours[i].key) != 0)
      continue;
    if (ours[i].kind == FLAG) {
      if (arg != NULL) {
        g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                     "mount option %s takes no value (write %s)", value,
                     key);
        return FALSE;
      }
      g_ptr_array_add (out, g_strdup_printf ("--%s", key));
    }
    else {
      if (arg == NULL || *arg == '\0') {
        g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                     "mount option %s needs a value (%s=...)", key, key);
        return FALSE;
      }
      g_ptr_array_add (out, g_strdup_printf ("--%s=%s", key, arg));
    }
    return TRUE;
  }
  for (size_t i = 0; i < G_N_ELEMENTS (kernel_only); i++)
    if (strcmp (key, kernel_only[i].key) == 0) {
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                   "mount option %s is for kernel mode, not a mount (%s)",
                   key, kernel_only[i].hint);
      return FALSE;
    }
  if (!is_dropped (value))
    g_ptr_array_add (fuse, g_strdup (raw));
  return TRUE;
}

static gboolean
translate_list (const char *list, GPtrArray *out, GPtrArray *fuse,
                GError **error)
{
  g_autoptr (GPtrArray) raw = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) values = g_ptr_array_new_with_free_func (g_free);
  split_list (list, raw, values);
  for (guint i = 0; i < raw->len; i++)
    if (!translate_one (raw->pdata[i], values->pdata[i], out, fuse, error))
      return FALSE;
  return TRUE;
}

char **
nbdfs_mount_options_expand (int argc, char *const *argv, GError **error)
{
  g_autoptr (GPtrArray) out = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) fuse = g_ptr_array_new_with_free_func (g_free);
  int i;

  if (argc > 0)
    g_ptr_array_add (out, g_strdup (argv[0]));
  for (i = 1; i < argc; i++) {
    const char *a = argv[i], *list = NULL;
    if (strcmp (a, "--") == 0)
      break;
    if (strcmp (a, "-o") == 0 || strcmp (a, "--option") == 0) {
      if (i + 1 >= argc) {
        g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                     "%s needs a list of options (see nbdfs --help)", a);
        return NULL;
      }
      list = argv[++i];
    }
    else if (g_str_has_prefix (a, "--option="))
      list = a + strlen ("--option=");
    else if (g_str_has_prefix (a, "-o"))
      list = a + 2;
    if (list == NULL) {
      g_ptr_array_add (out, g_strdup (a));
      continue;
    }
    if (!translate_list (list, out, fuse, error))
      return NULL;
  }
  if (fuse->len > 0) {
    g_ptr_array_add (fuse, NULL);
    g_ptr_array_add (out, g_strdup ("-o"));
    g_ptr_array_add (out, g_strjoinv (",", (char **) fuse->pdata));
  }
  for (; i < argc; i++)
    g_ptr_array_add (out, g_strdup (argv[i]));
  g_ptr_array_add (out, NULL);
  return (char **) g_ptr_array_free (g_steal_pointer (&out), FALSE);
}
