/* nbdfs — libfuse's messages into GLib's log, so that they take the same
 * way as ours (stderr or syslog, chosen by the program layer) under the
 * domain "libfuse". The logger preserves errno.
 */
#include <errno.h>
#include <stdarg.h>
#include <fuse_log.h>

#include "fuse/fs.h"

/* libfuse logs one line in several calls ("unknown option(s): `", "-o",
 * "bogus'\n"): collect the pieces per thread until the newline. */
static void
fuse_logger (enum fuse_log_level level, const char *fmt, va_list ap)
{
  static GPrivate pending = G_PRIVATE_INIT ((GDestroyNotify) g_free);
  int saved = errno;
  g_autofree char *piece = g_strdup_vprintf (fmt, ap);
  char *prev = g_private_get (&pending);
  char *msg = g_strconcat (prev ? prev : "", piece, NULL);

  if (!g_str_has_suffix (msg, "\n")) {
    g_private_replace (&pending, msg);
    errno = saved;
    return;
  }
  g_private_replace (&pending, NULL);
  g_strchomp (msg);
  GLogLevelFlags l = level <= FUSE_LOG_ERR ? G_LOG_LEVEL_WARNING
    : level <= FUSE_LOG_NOTICE ? G_LOG_LEVEL_MESSAGE : G_LOG_LEVEL_DEBUG;
  g_log_structured ("libfuse", l, "MESSAGE", "%s", msg);
  g_free (msg);
  errno = saved;
}

void
nbdfs_fuse_log_to_glib (void)
{
  fuse_set_log_func (fuse_logger);
}
