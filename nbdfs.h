/* nbdfs — the parsed command line, shared by every mode's entry point.
 * main.c fills it; cmd-list.c, cmd-info.c, mount.c (FUSE) and
 * kernelattach/ consume it. */
#ifndef NBDFS_CLI_H
#define NBDFS_CLI_H

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
} NbdfsCli;

/* Each entry point returns the process exit status (0 on success), or -1
 * with *error set; only main() prints. */
int nbdfs_cmd_list (NbdfsCli *cli, GError **error);
int nbdfs_cmd_info (NbdfsCli *cli, GError **error);
int nbdfs_fuse_run (NbdfsCli *cli, GError **error);

#endif
