/* nbdfs — kernel mode through the old ioctl interface of <linux/nbd.h>.
 *
 * The fallback when generic netlink is unavailable, or asked for with
 * --ioctl. The shape is qemu-nbd's nbd_init()/nbd_client(): configure the
 * device, then one process blocks in NBD_DO_IT for as long as the device
 * lives (the driver tears the device down when that call returns or the
 * process dies). There is no way to replace a dead socket here, which is
 * why --persist needs netlink.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/nbd.h>

#include "kernelattach/kernel.h"
#include "nbdclient/error.h"

static gboolean
nbd_ioctl (int fd, unsigned long req, unsigned long arg, const char *what,
           int index, GError **error)
{
  if (ioctl (fd, req, arg) == 0)
    return TRUE;
  int err = errno;
  if (err == EBUSY)
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                 "/dev/nbd%d is already attached (nbdfs --status /dev/nbd%d; "
                 "detach it with nbdfs --disconnect /dev/nbd%d)",
                 index, index, index);
  else
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                 "/dev/nbd%d: %s: %s", index, what, g_strerror (err));
  return FALSE;
}

static int
open_device (int index, GError **error)
{
  g_autofree char *path = g_strdup_printf ("/dev/nbd%d", index);
  int fd = open (path, O_RDWR | O_CLOEXEC);

  if (fd < 0) {
    int err = errno;
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err),
                 "cannot open %s: %s%s", path, g_strerror (err),
                 err == ENOENT ? " (is nbd.ko loaded with enough devices? "
                 "modprobe nbd nbds_max=N)" : "");
  }
  return fd;
}

int
nbdk_ioctl_setup (const NbdkAttach *a, GError **error)
{
  int fd;

  g_return_val_if_fail (a->index >= 0, -1);
  fd = open_device (a->index, error);
  if (fd < 0)
    return -1;
  /* Block size first: NBD_SET_SIZE keeps the current block size. */
  if (!nbd_ioctl (fd, NBD_SET_BLKSIZE, a->block_size, "NBD_SET_BLKSIZE",
                  a->index, error)
      || !nbd_ioctl (fd, NBD_SET_SIZE, a->size, "NBD_SET_SIZE", a->index,
                     error)
      || (a->timeout && !nbd_ioctl (fd, NBD_SET_TIMEOUT, a->timeout,
                                    "NBD_SET_TIMEOUT", a->index, error))
      || !nbd_ioctl (fd, NBD_SET_FLAGS, a->server_flags, "NBD_SET_FLAGS",
                     a->index, error))
    goto fail;
  for (unsigned i = 0; i < a->n_fds; i++)
    if (!nbd_ioctl (fd, NBD_SET_SOCK, a->fds[i], "NBD_SET_SOCK", a->index,
                    error))
      goto fail;
  return fd;

 fail:
  /* Undo a half-done setup so the device is free again. */
  ioctl (fd, NBD_CLEAR_SOCK);
  close (fd);
  return -1;
}

int
nbdk_ioctl_do_it (int devfd)
{
  int err = 0;

  if (ioctl (devfd, NBD_DO_IT) < 0)
    err = errno;
  g_debug ("NBD_DO_IT returned: %s", err ? g_strerror (err) : "ok");
  ioctl (devfd, NBD_CLEAR_QUE);
  ioctl (devfd, NBD_CLEAR_SOCK);
  return err;
}

void
nbdk_ioctl_request_disconnect (int devfd)
{
  if (ioctl (devfd, NBD_DISCONNECT) < 0)
    g_warning ("NBD_DISCONNECT: %s", g_strerror (errno));
}

gboolean
nbdk_ioctl_disconnect (int index, GError **error)
{
  int fd = open_device (index, error);
  gboolean ok;

  if (fd < 0)
    return FALSE;
  ok = nbd_ioctl (fd, NBD_DISCONNECT, 0, "NBD_DISCONNECT", index, error);
  /* Allowed on netlink-attached devices too; drops our reference. */
  ioctl (fd, NBD_CLEAR_SOCK);
  close (fd);
  return ok;
}
