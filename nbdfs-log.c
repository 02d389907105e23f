/* nbdfs — where every mode's messages go: stderr until the process
 * daemonises, syslog (LOG_DAEMON, ident "nbdfs") after, like nbdkit's
 * log-syslog.c. One format: "DOMAIN: [LEVEL: ]MESSAGE", DOMAIN being the
 * log domain of the part that spoke (nbdfs, nbdfs-client, nbdfs-fuse,
 * nbdfs-kernel, libfuse). Debug and info lines are shown only with -v.
 * The writer preserves errno, so logging never disturbs an errno-returning
 * I/O path.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "nbdfs.h"

static gboolean log_syslog;
static gboolean log_verbose;

static void
emit (GLogLevelFlags level, const char *domain, const char *message)
{
  const char *what;
  int prio;

  if (level & G_LOG_LEVEL_ERROR) {
    what = "error";
    prio = LOG_ERR;
  }
  else if (level & G_LOG_LEVEL_CRITICAL) {
    what = "critical";
    prio = LOG_CRIT;
  }
  else if (level & G_LOG_LEVEL_WARNING) {
    what = "warning";
    prio = LOG_WARNING;
  }
  else if (level & (G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO)) {
    what = NULL;
    prio = (level & G_LOG_LEVEL_INFO) ? LOG_INFO : LOG_NOTICE;
  }
  else {
    what = "debug";
    prio = LOG_DEBUG;
  }
  if ((level & (G_LOG_LEVEL_DEBUG | G_LOG_LEVEL_INFO)) && !log_verbose)
    return;
  if (domain == NULL)
    domain = "nbdfs";
  if (log_syslog)
    syslog (prio, "%s: %s%s%s", domain, what ? what : "", what ? ": " : "",
            message);
  else
    fprintf (stderr, "%s: %s%s%s\n", domain, what ? what : "",
             what ? ": " : "", message);
  /* Under systemd the last notice or warning is the unit's status line
   * ("connection 1 lost; reconnecting", "re-established", "could not
   * reconnect"). */
  if (level & (G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE))
    nbdfs_notify_status (message);
}

static GLogWriterOutput
writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields,
        gpointer user_data)
{
  int saved = errno;
  const char *message = "", *domain = NULL;

  for (gsize i = 0; i < n_fields; i++) {
    if (strcmp (fields[i].key, "MESSAGE") == 0 && fields[i].length < 0)
      message = fields[i].value;
    else if (strcmp (fields[i].key, "GLIB_DOMAIN") == 0
             && fields[i].length < 0)
      domain = fields[i].value;
  }
  emit (level, domain, message);
  errno = saved;
  return G_LOG_WRITER_HANDLED;
}

void
nbdfs_log_setup (gboolean to_syslog, gboolean verbose)
{
  static gboolean installed;

  log_syslog = to_syslog;
  log_verbose = verbose;
  if (to_syslog)
    openlog ("nbdfs", LOG_PID, LOG_DAEMON);
  if (!installed) {
    g_log_set_writer_func (writer, NULL, NULL);
    installed = TRUE;
  }
}
