/* TEMPORARY: placeholders until mount.c lands (the FUSE
 * engineer deletes this file then). */
#include "fuse/cli.h"
#include "nbdclient/error.h"

int
nbdfs_fuse_run (NbdfsCli *cli, GError **error)
{
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED, "FUSE mode: not built yet");
  return -1;
}
