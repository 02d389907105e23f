/* nbdfs — readiness and status for systemd (the sd_notify(3) protocol).
 *
 * Under a Type=notify unit systemd sets NOTIFY_SOCKET; we send "READY=1"
 * once the mount is usable or the device attached, "STATUS=..." lines a
 * human reads in systemctl status, and "STOPPING=1" when shutting down.
 * Without NOTIFY_SOCKET every call is a no-op that returns TRUE. */
#ifndef SYSTEM_NOTIFY_H
#define SYSTEM_NOTIFY_H

#include <glib.h>

/* TRUE when NOTIFY_SOCKET is set (we run under a Type=notify unit). */
gboolean nbdfs_notify_wanted (void);

/* Sends one datagram of newline-separated VAR=value assignments, e.g.
 * "READY=1\nSTATUS=connected". FALSE with G_IO_ERROR if the socket is
 * unusable (the caller logs it; a unit without readiness still runs). */
gboolean nbdfs_notify (const char *state, GError **error);
gboolean nbdfs_notifyf (GError **error, const char *fmt, ...)
  G_GNUC_PRINTF (2, 3);

/* Waits (at most timeout_ms) until systemd has read everything sent so
 * far: sd_notify_barrier(3), "BARRIER=1" with a pipe it closes. A process
 * that exits right after READY=1 (kernel mode without --persist) calls
 * it, or systemd may see the exit before the READY=1. */
gboolean nbdfs_notify_barrier (unsigned timeout_ms, GError **error);

#endif
