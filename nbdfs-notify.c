/* nbdfs — readiness for systemd in every mode (system/notify.h does the
 * protocol). READY=1 goes out once, when the mount is usable or the
 * device attached; each message the log shows at notice level or above
 * (connection lost and reconnecting, re-established, gone for good)
 * becomes the unit's STATUS=; STOPPING=1 when the shutdown begins. A
 * process that exits right after READY=1 waits for systemd to have read
 * it (the barrier), or systemd could see the exit first and fail the
 * unit. Without NOTIFY_SOCKET all of this does nothing. */
#include <stdarg.h>

#include "nbdfs.h"
#include "system/notify.h"

static gint ready_sent;
static gint failed_once;

static void
send_or_warn (const char *state)
{
  g_autoptr (GError) error = NULL;
  if (nbdfs_notify (state, &error))
    return;
  /* Warn once: the warning itself becomes a STATUS= that fails again. */
  if (g_atomic_int_compare_and_exchange (&failed_once, 0, 1))
    g_warning ("telling systemd: %s", error->message);
}

void
nbdfs_notify_ready (const char *fmt, ...)
{
  if (!nbdfs_notify_wanted ())
    return;
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *status = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_autofree char *state = g_strdup_printf ("READY=1\nSTATUS=%s", status);
  if (g_atomic_int_compare_and_exchange (&ready_sent, 0, 1))
    send_or_warn (state);
}

void
nbdfs_notify_status (const char *message)
{
  if (!nbdfs_notify_wanted ())
    return;
  g_autofree char *state = g_strdup_printf ("STATUS=%s", message);
  /* One line: systemd shows STATUS as given. */
  g_strdelimit (state, "\n", ' ');
  send_or_warn (state);
}

void
nbdfs_notify_stopping (const char *status)
{
  if (!nbdfs_notify_wanted ())
    return;
  g_autofree char *state = g_strdup_printf ("STOPPING=1\nSTATUS=%s", status);
  send_or_warn (state);
}

void
nbdfs_notify_flush (void)
{
  g_autoptr (GError) error = NULL;
  if (!g_atomic_int_get (&ready_sent))
    return;
  if (!nbdfs_notify_barrier (5000, &error))
    g_debug ("systemd barrier: %s", error->message);
}
