/* nbdfs ADDRESS MOUNTPOINT: FUSE mode (fuse/mount.h), daemonised by the
 * program layer. */
#include "nbdfs.h"
#include "fuse/mount.h"

int
nbdfs_cmd_fuse (NbdfsCli *cli, GError **error)
{
  NbdfsFuseOptions o = {
    .nbd = &cli->nbd,
    .pool = &cli->pool,
    .mountpoint = cli->target,
    .all = cli->all,
    .file_name = cli->file_name,
    .fuse_opts = cli->fuse_opts,
    .verbose = cli->verbose,
  };
  g_autofree char *mountpoint = nbdfs_fuse_check (&o, error);
  g_autoptr (GError) err = NULL;
  int status = 1;

  if (mountpoint == NULL)
    return -1;
  nbdfs_pidfile_absolute (&cli->pidfile);
  NbdfsDaemon d = { .foreground = cli->foreground, .verbose = cli->verbose,
                    .pidfile = cli->pidfile };
  if (!nbdfs_daemon_begin (&d, &status, error))
    return status;        /* the parent, after the child's verdict */

  NbdfsFs *fs = nbdfs_fuse_start (&o, mountpoint, &err);
  if (fs) {
    if (nbdfs_daemon_ready (&d, &err)) {
      g_autofree char *where = nbdc_address_describe (&cli->nbd.addr);
      nbdfs_notify_ready ("mounted %s on %s", where, mountpoint);
      nbdfs_fuse_serve (fs);
      nbdfs_notify_stopping ("unmounting: finishing requests, flushing, "
                             "disconnecting");
    }
    /* Not served (the pidfile failed): unmounts, status 1. */
    status = nbdfs_fuse_stop (fs) ? 0 : 1;
  }
  return nbdfs_daemon_end (&d, status, err, error);
}
