/* nbdfs — raise the kernel's readahead window for our mount.
 *
 * FUSE_INIT can only lower max_readahead below what the kernel offers
 * (128 KiB, the bdi default), and buffered sequential reads (cp, a loop
 * device without direct-io, qemu with cache=writeback) go at the speed of
 * that window: 1 MiB doubles it on a fast server. The window lives in
 * /sys/class/bdi/MAJOR:MINOR/read_ahead_kb of the anonymous device the
 * mount got, which we find in /proc/self/mountinfo (never by stat()ing
 * the mount point, which would need our own session loop to answer).
 * Root only, best effort: failure is a debug line.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fuse/fs.h"

#define NBDFS_READAHEAD_KB 1024

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static char *
escape_mountinfo (const char *path)
{
  GString *s = g_string_new (NULL);
  for (const char *p = path; *p; p++) {
    if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\\')
      g_string_append_printf (s, "\\%03o", (unsigned char) *p);
    else
      g_string_append_c (s, *p);
  }
  return g_string_free (s, FALSE);
}

void
nbdfs_tune_readahead (const char *mountpoint)
{
  g_autofree char *want = escape_mountinfo (mountpoint);
  g_autofree char *text = NULL;
  g_autofree char *dev = NULL;

  if (!g_file_get_contents ("/proc/self/mountinfo", &text, NULL, NULL))
    return;
  /* "ID PARENT MAJ:MIN ROOT MOUNTPOINT ...": the last match is ours. */
  g_auto (GStrv) lines = g_strsplit (text, "\n", -1);
  for (char **l = lines; *l; l++) {
    g_auto (GStrv) f = g_strsplit (*l, " ", 6);
    if (g_strv_length (f) >= 5 && strcmp (f[4], want) == 0) {
      g_free (dev);
      dev = g_strdup (f[2]);
    }
  }
  if (dev == NULL)
    return;

  g_autofree char *path = g_strdup_printf ("/sys/class/bdi/%s/read_ahead_kb",
                                           dev);
  g_autofree char *cur = NULL;
  if (!g_file_get_contents (path, &cur, NULL, NULL))
    return;
  if (g_ascii_strtoull (cur, NULL, 10) >= NBDFS_READAHEAD_KB)
    return;
  FILE *fp = fopen (path, "w");
  if (fp == NULL || fprintf (fp, "%d\n", NBDFS_READAHEAD_KB) < 0
      || fclose (fp) != 0) {
    int e = errno;
    if (fp)
      fclose (fp);
    g_debug ("readahead: cannot write %s: %s", path, g_strerror (e));
    return;
  }
  g_debug ("readahead: %s set to %d KiB", path, NBDFS_READAHEAD_KB);
}
