/* nbdfs — kernel mode: device names, /sys/block/nbdN, the module check,
 * and the small state file nbdfs keeps per attached device. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernelattach/kernel.h"
#include "nbdclient/error.h"

#define STATE_DIR "/run/nbdfs"

gboolean
nbdk_device_parse (const char *name, int *index, GError **error)
{
  const char *p = name;

  if (p == NULL || *p == '\0')
    goto bad;
  if (g_str_has_prefix (p, "/dev/"))
    p += strlen ("/dev/");
  if (!g_str_has_prefix (p, "nbd"))
    goto bad;
  p += 3;
  /* Digits only: no sign, no spaces, no partition suffix ("nbd0p1"). */
  if (*p == '\0' || strspn (p, "0123456789") != strlen (p)
      || strlen (p) > 7 || (p[0] == '0' && p[1] != '\0'))
    goto bad;
  *index = atoi (p);
  return TRUE;

 bad:
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
               "'%s' is not an nbd device name: expected /dev/nbdN or nbdN "
               "(e.g. /dev/nbd0)", name ? name : "");
  return FALSE;
}

gboolean
nbdk_module_loaded (void)
{
  return g_file_test ("/sys/module/nbd", G_FILE_TEST_IS_DIR);
}

void
nbdk_set_module_error (GError **error)
{
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
               "the nbd kernel module is not loaded: run 'modprobe nbd' "
               "(or use FUSE mode: nbdfs ADDRESS MOUNTPOINT)");
}

gboolean
nbdk_device_exists (int index)
{
  g_autofree char *path = g_strdup_printf ("/sys/block/nbd%d", index);
  return g_file_test (path, G_FILE_TEST_IS_DIR);
}

gboolean
nbdk_device_attached (int index)
{
  /* The driver creates "pid" when a device starts (nbd_start_device) and
   * removes it when the configuration goes away. */
  g_autofree char *path = g_strdup_printf ("/sys/block/nbd%d/pid", index);
  return g_file_test (path, G_FILE_TEST_EXISTS);
}

char *
nbdk_device_sysfs (int index, const char *attr)
{
  g_autofree char *path = g_strdup_printf ("/sys/block/nbd%d/%s", index, attr);
  char *s = NULL;

  if (!g_file_get_contents (path, &s, NULL, NULL))
    return NULL;
  g_strchomp (s);
  return s;
}

static gint
cmp_int (gconstpointer a, gconstpointer b)
{
  int x = *(const int *) a, y = *(const int *) b;
  return x < y ? -1 : x > y;
}

GArray *
nbdk_device_list (void)
{
  GArray *list = g_array_new (FALSE, FALSE, sizeof (int));
  g_autoptr (GDir) dir = g_dir_open ("/sys/block", 0, NULL);
  const char *name;
  int index;

  if (dir == NULL)
    return list;
  while ((name = g_dir_read_name (dir)) != NULL)
    if (nbdk_device_parse (name, &index, NULL))
      g_array_append_val (list, index);
  g_array_sort (list, cmp_int);
  return list;
}

/* ---- /run/nbdfs/nbdN ---- */

static char *
state_path (int index)
{
  return g_strdup_printf (STATE_DIR "/nbd%d", index);
}

void
nbdk_state_write (int index, const NbdkState *st)
{
  g_autofree char *path = state_path (index);
  g_autofree char *text = NULL;
  g_autoptr (GError) error = NULL;

  if (g_mkdir_with_parents (STATE_DIR, 0755) != 0) {
    g_debug ("cannot create %s: %s", STATE_DIR, g_strerror (errno));
    return;
  }
  text = g_strdup_printf ("backend=%s\nconnections=%u\npid=%d\n"
                          "interface=%s\npersist=%d\n",
                          st->backend ? st->backend : "", st->connections,
                          st->daemon_pid, st->ioctl ? "ioctl" : "netlink",
                          st->persist ? 1 : 0);
  if (!g_file_set_contents (path, text, -1, &error))
    g_debug ("cannot write %s: %s", path, error->message);
}

gboolean
nbdk_state_read (int index, NbdkState *st)
{
  g_autofree char *path = state_path (index);
  g_autofree char *text = NULL;
  g_autofree char *backend = NULL;
  g_auto (GStrv) lines = NULL;

  memset (st, 0, sizeof *st);
  if (!g_file_get_contents (path, &text, NULL, NULL))
    return FALSE;
  lines = g_strsplit (text, "\n", -1);
  for (char **l = lines; *l; l++) {
    char *eq = strchr (*l, '=');
    if (eq == NULL)
      continue;
    *eq = '\0';
    const char *v = eq + 1;
    if (strcmp (*l, "backend") == 0) {
      g_free (st->backend);
      st->backend = g_strdup (v);
    }
    else if (strcmp (*l, "connections") == 0)
      st->connections = (unsigned) g_ascii_strtoull (v, NULL, 10);
    else if (strcmp (*l, "pid") == 0)
      st->daemon_pid = (int) g_ascii_strtoll (v, NULL, 10);
    else if (strcmp (*l, "interface") == 0)
      st->ioctl = strcmp (v, "ioctl") == 0;
    else if (strcmp (*l, "persist") == 0)
      st->persist = strcmp (v, "1") == 0;
  }
  /* Written for an earlier attachment (someone else attached the device
   * since, e.g. with nbd-client): ignore it. A netlink attachment is
   * recognised by its backend identifier; the ioctl interface sets none,
   * but /sys/block/nbdN/pid is the process that runs NBD_DO_IT. */
  if (!nbdk_device_attached (index))
    goto stale;
  if (st->ioctl) {
    g_autofree char *pid = nbdk_device_sysfs (index, "pid");
    if (pid == NULL || st->daemon_pid <= 0
        || g_ascii_strtoll (pid, NULL, 10) != st->daemon_pid)
      goto stale;
  }
  else {
    backend = nbdk_device_sysfs (index, "backend");
    if (g_strcmp0 (backend ? backend : "", st->backend ? st->backend : "")
        != 0)
      goto stale;
  }
  if (st->daemon_pid > 0 && kill (st->daemon_pid, 0) != 0 && errno == ESRCH)
    st->daemon_pid = 0;
  return TRUE;

 stale:
  nbdk_state_clear (st);
  return FALSE;
}

void
nbdk_state_remove (int index)
{
  g_autofree char *path = state_path (index);
  unlink (path);
}

void
nbdk_state_clear (NbdkState *st)
{
  g_clear_pointer (&st->backend, g_free);
  memset (st, 0, sizeof *st);
}
