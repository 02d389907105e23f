/* nbdfs — the program layer: the top-level nbdfs*.c files. They own the
 * command line, validation, dispatch, every byte printed (text and JSON),
 * daemonising, the pidfile and where log messages go, for every mode. The
 * modes are libraries below them (fuse/mount.h, kernelattach/attach.h),
 * which are below nbdclient/; nothing below includes this header.
 *
 *   nbdfs.c          main: argv, validation, dispatch, the one error line
 *   nbdfs-list.c     --list          nbdfs-info.c    --info
 *   nbdfs-fuse.c     FUSE mode       nbdfs-kernel.c  --kernel, --status,
 *                                                    --disconnect
 *   nbdfs-daemon.c   fork with a readiness pipe, the pidfile, detaching
 *   nbdfs-log.c      stderr or syslog, one format
 *   nbdfs-output.c   stdout, and the JSON string writer
 */
#ifndef NBDFS_H
#define NBDFS_H

#include <sys/types.h>
#include <glib.h>
#include "nbdclient/negotiate.h"
#include "nbdclient/pool.h"

/* The parsed command line. */
typedef struct {
  NbdcOptions nbd;            /* address, TLS, handshake timeout */
  NbdcPoolConfig pool;        /* -C, --timeout, --reconnect, -r */

  gboolean list;              /* --list */
  gboolean info;              /* --info */
  gboolean json;              /* --json with --info/--list/--status */
  gboolean kernel;            /* --kernel */
  gboolean disconnect;        /* -d/--disconnect DEVICE */
  gboolean status;            /* --status [DEVICE] */
  gboolean persist;           /* --persist (kernel) */
  gboolean use_ioctl;         /* --ioctl (kernel) */
  gboolean all;               /* --all (FUSE: every listed export) */
  gboolean foreground;        /* -f */
  gboolean verbose;           /* -v */
  char *target;               /* FUSE: mountpoint; kernel: device or NULL */
  char *file_name;            /* --name FILE */
  char *pidfile;              /* --pidfile */
  char **fuse_opts;           /* -o OPT, repeatable */
  char *nbdtab;               /* --nbdtab FILE: target is the device */
} NbdfsCli;

/* Each command returns the process exit status (0 on success), or -1
 * with *error set, which main() prints. */
int nbdfs_cmd_list (NbdfsCli *cli, GError **error);
int nbdfs_cmd_info (NbdfsCli *cli, GError **error);
int nbdfs_cmd_fuse (NbdfsCli *cli, GError **error);
int nbdfs_cmd_kernel (NbdfsCli *cli, GError **error);
int nbdfs_cmd_status (NbdfsCli *cli, GError **error);
int nbdfs_cmd_disconnect (NbdfsCli *cli, GError **error);

/* ---- nbdfs-daemon.c ---- */

typedef struct {
  gboolean foreground;        /* -f: no fork, stderr stays */
  gboolean verbose;
  const char *pidfile;        /* absolute, or NULL */
  int ready_fd;               /* child: the pipe to the waiting parent */
  gboolean pidfile_written;
} NbdfsDaemon;

/* Makes a relative --pidfile absolute: a daemon runs in /. */
void nbdfs_pidfile_absolute (char **pidfile);
/* Unless d->foreground, forks: the parent waits until the child is ready
 * or failed, and returns FALSE with *status set (0, or -1 + error: the
 * child's error); the child (a new session) returns TRUE and carries on.
 * In the foreground it returns TRUE at once. */
gboolean nbdfs_daemon_begin (NbdfsDaemon *d, int *status, GError **error);
/* The serving process is ready: writes the pidfile (our PID), tells the
 * waiting parent, and a background process then logs to syslog, moves to
 * / and drops its stdio. FALSE + error if the pidfile cannot be written. */
gboolean nbdfs_daemon_ready (NbdfsDaemon *d, GError **error);
/* The end: removes the pidfile. err (not consumed) is the reason the
 * serving failed, if it did: before ready it goes to the waiting parent
 * (a background child then returns 1), in the foreground it is propagated
 * (returns -1), after ready it is logged. Returns the exit status. */
int nbdfs_daemon_end (NbdfsDaemon *d, int status, const GError *err,
                      GError **error);

/* ---- nbdfs-log.c ---- */

/* Routes GLib's log (every directory's domain, and libfuse's through
 * fuse/) to stderr or syslog; debug and info only when verbose. */
void nbdfs_log_setup (gboolean to_syslog, gboolean verbose);

/* ---- nbdfs-notify.c: systemd readiness (sd_notify) ---- */

/* READY=1 with STATUS=<printf>, once per process. */
void nbdfs_notify_ready (const char *fmt, ...) G_GNUC_PRINTF (1, 2);
/* STATUS=message (the log calls it for notices and warnings). */
void nbdfs_notify_status (const char *message);
/* STOPPING=1 with STATUS=status. */
void nbdfs_notify_stopping (const char *status);
/* Before exiting: waits until systemd has read what we sent, if READY=1
 * went out. */
void nbdfs_notify_flush (void);

/* ---- nbdfs-version.c ---- */

/* --version: nbdfs's version and the loaded libraries'. */
void nbdfs_print_version (void);

/* ---- nbdfs-output.c ---- */

/* Writes text to stdout; FALSE + "writing WHAT failed" (a full disk, a
 * closed pipe) so a script never takes a cut-off answer for a whole one. */
gboolean nbdfs_output (const GString *text, const char *what,
                       GError **error);

/* Appends s as a JSON string literal (quotes included); NULL as "". Bytes
 * that are not valid UTF-8 become U+FFFD, so the output is always valid
 * JSON (RFC 8259 section 8.1). */
void nbdfs_json_append_string (GString *out, const char *s);
/* The same, but NULL becomes the literal null. */
void nbdfs_json_append_string_or_null (GString *out, const char *s);
/* TRUE if s[0..len) is valid UTF-8 without NUL, i.e. JSON can carry it
 * exactly. */
gboolean nbdfs_json_can_carry (const char *s, size_t len);

#endif
