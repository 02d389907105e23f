/* TEMPORARY: placeholders until the kernel-mode files land (delete then). */
#include "kernelattach/attach.h"
#include "nbdclient/error.h"

int
nbdfs_kernel_run (NbdfsCli *cli, GError **error)
{
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED, "--kernel: not built yet");
  return -1;
}

gboolean
nbdfs_kernel_disconnect (const char *device, GError **error)
{
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED, "--disconnect: not built yet");
  return FALSE;
}

gboolean
nbdfs_kernel_status (const char *device, gboolean json, GError **error)
{
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED, "--status: not built yet");
  return FALSE;
}
