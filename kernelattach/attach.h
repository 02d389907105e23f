/* nbdfs — kernel mode: hand negotiated sockets to the kernel nbd driver.
 * The only entry points main() calls. <linux/nbd.h> and
 * <linux/nbd-netlink.h> are included only inside kernelattach/ sources. */
#ifndef KERNELATTACH_ATTACH_H
#define KERNELATTACH_ATTACH_H

#include <glib.h>
#include "nbdfs.h"

/* nbdfs --kernel ADDRESS [DEVICE]: returns the exit status or -1 + error. */
int nbdfs_kernel_run (NbdfsCli *cli, GError **error);
/* nbdfs --disconnect DEVICE ("/dev/nbd0" or "nbd0"). */
gboolean nbdfs_kernel_disconnect (const char *device, GError **error);
/* nbdfs --status [DEVICE]: prints attached devices. */
gboolean nbdfs_kernel_status (const char *device, gboolean json,
                              GError **error);

#endif
