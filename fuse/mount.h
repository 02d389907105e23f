/* nbdfs — FUSE mode as a library: the program layer (nbdfs-fuse.c) calls
 * check, then (after it daemonised) start, serve and stop. Nothing here
 * prints: errors come back as GError, messages go to GLib's log (the
 * program decides where that goes); libfuse's own messages are routed
 * into GLib's log under the domain "libfuse". */
#ifndef NBDFS_FUSE_MOUNT_H
#define NBDFS_FUSE_MOUNT_H

#include <glib.h>
#include "nbdclient/negotiate.h"
#include "nbdclient/pool.h"

/* FUSE-mode defaults (README "FUSE mode", "When the server goes away").
 * The request timeout counts seconds without any byte from the server
 * while something is owed: long enough for a FLUSH of gigabytes of dirty
 * cache, or a big WRITE_ZEROES, on a slow disk behind a live server; short
 * enough that a wedged server turns into EIO within minutes, not never.
 * Reconnect: a server restart or upgrade (seconds to a minute) is ridden
 * out with I/O waiting, as a local disk under load would make it wait. */
#define NBDFS_FUSE_DEFAULT_TIMEOUT 120
#define NBDFS_FUSE_DEFAULT_RECONNECT 60

/* What FUSE mode needs to know; the caller keeps it (and what it points
 * to) alive until nbdfs_fuse_stop. */
typedef struct {
  const NbdcOptions *nbd;       /* address, TLS, handshake timeout */
  const NbdcPoolConfig *pool;   /* connections, timeouts, read-only */
  const char *mountpoint;
  gboolean all;                 /* every listed export, one file each */
  const char *file_name;        /* the file's name; NULL: from the export */
  char *const *fuse_opts;       /* -o OPT,... (NULL-terminated) or NULL */
  gboolean verbose;             /* per-request debug messages */
} NbdfsFuseOptions;

typedef struct NbdfsFs NbdfsFs;

/* What can be refused before anything is opened or forked: the mount
 * point (a directory, empty unless -o nonempty) and /dev/fuse. Returns
 * the absolute mount point (caller frees) or NULL + error. */
char *nbdfs_fuse_check (const NbdfsFuseOptions *o, GError **error);
/* Opens the pool(s) and mounts on the absolute mount point from
 * nbdfs_fuse_check. Creates threads: call it in the process that serves.
 * Returns NULL + error (nothing left mounted or open). */
NbdfsFs *nbdfs_fuse_start (const NbdfsFuseOptions *o, const char *mountpoint,
                           GError **error);
/* Serves until SIGTERM/SIGINT/SIGHUP or an unmount. */
void nbdfs_fuse_serve (NbdfsFs *fs);
/* Unmounts, answers every request still owed a reply, flushes and closes
 * the pools (bounded time), frees fs. TRUE if everything written was
 * flushed and the session had been served. */
gboolean nbdfs_fuse_stop (NbdfsFs *fs);

#endif
