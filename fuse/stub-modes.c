/* TEMPORARY: placeholders until cmd-list.c, cmd-info.c and mount.c land
 * (each helper deletes its function from here). */
#include "fuse/cli.h"
#include "nbdclient/error.h"

int
nbdfs_cmd_list (NbdfsCli *cli, GError **error)
{
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED, "--list: not built yet");
  return -1;
}

int
nbdfs_cmd_info (NbdfsCli *cli, GError **error)
{
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED, "--info: not built yet");
  return -1;
}

int
nbdfs_fuse_run (NbdfsCli *cli, GError **error)
{
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED, "FUSE mode: not built yet");
  return -1;
}
