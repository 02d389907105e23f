/* nbdfs — kernel mode: negotiating the connections the kernel gets.
 *
 * The driver speaks only the transmission phase, and only simple replies
 * (no NBD_OPT_STRUCTURED_REPLY, no meta contexts, no extended headers), so
 * the shared negotiator runs with those switched off and we hand over the
 * bare socket. Everything the server said is checked here, before the
 * kernel sees any of it.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <string.h>
#include <unistd.h>

#include "kernelattach/kernel.h"
#include "nbdclient/error.h"
#include "nbdclient/names.h"
#include "nbdclient/protocol.h"

/* The kernel reads and writes this socket from its own threads: no
 * O_NONBLOCK, and no SO_RCVTIMEO/SO_SNDTIMEO left over from the handshake
 * deadline (the driver would see a timeout as a dead connection). */
static gboolean
prepare_for_kernel (int fd, GError **error)
{
  struct timeval zero = { 0 };
  int fl = fcntl (fd, F_GETFL);

  if (fl < 0 || (fl & O_NONBLOCK && fcntl (fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
      || setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &zero, sizeof zero) < 0
      || setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof zero) < 0) {
    int err = errno;
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err),
                 "preparing the socket for the kernel: %s", g_strerror (err));
    return FALSE;
  }
  return TRUE;
}

int
nbdk_open_socket (const NbdcOptions *opts, NbdExport *exp, GError **error)
{
  NbdTransport *t = nbdc_open (opts, exp, error);
  int fd;

  if (t == NULL)
    return -1;
  if (nbdc_transport_is_tls (t)) {
    /* The kernel cannot speak TLS: it gets one end of a socketpair and
     * the relay (relay.c) moves the bytes; run.c then keeps this process
     * alive as long as the device. */
    fd = nbdk_relay_add (t, error);
    if (fd < 0)
      nbdc_export_clear (exp);
    return fd;
  }
  fd = nbdc_transport_steal_fd (t);
  if (fd < 0) {
    nbdc_export_clear (exp);
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_FAILED,
                 "cannot take the socket out of the transport");
    return -1;
  }
  if (!prepare_for_kernel (fd, error)) {
    close (fd);
    nbdc_export_clear (exp);
    return -1;
  }
  return fd;
}

gboolean
nbdk_same_export (const NbdExport *first, const NbdExport *later,
                  GError **error)
{
  if (later->size != first->size) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                 "the export's size changed from %" G_GUINT64_FORMAT " to %"
                 G_GUINT64_FORMAT " bytes: refusing to put a different "
                 "export under the device", first->size, later->size);
    return FALSE;
  }
  if (later->eflags != first->eflags) {
    g_autofree char *a = nbdc_eflags_to_string (first->eflags);
    g_autofree char *b = nbdc_eflags_to_string (later->eflags);
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                 "the export's flags changed from 0x%x (%s) to 0x%x (%s): "
                 "refusing to put a different export under the device",
                 first->eflags, a, later->eflags, b);
    return FALSE;
  }
  if (later->min_block != first->min_block) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL,
                 "the export's minimum block size changed from %u to %u",
                 first->min_block, later->min_block);
    return FALSE;
  }
  return TRUE;
}

gboolean
nbdk_block_size (const NbdExport *exp, uint64_t *bs, GError **error)
{
  long page = sysconf (_SC_PAGESIZE);
  uint64_t b = 512;

  if (page <= 0)
    page = 4096;
  /* The logical block size is the smallest request the kernel sends and
   * the alignment of every request: it must be at least the server's
   * minimum block size ("Block size constraints": the client MUST NOT
   * send smaller or unaligned requests). The preferred size would only
   * change the sector size users see (partition tables), so it is not
   * used. The driver accepts powers of two from 512 to PAGE_SIZE. */
  while (b < exp->min_block)
    b <<= 1;
  if (b > (uint64_t) page) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED,
                 "the server's minimum block size is %u bytes, more than the "
                 "kernel nbd driver can use (%ld); use FUSE mode, which "
                 "handles any block size", exp->min_block, page);
    return FALSE;
  }
  *bs = b;
  return TRUE;
}

char *
nbdk_backend_id (const NbdcOptions *opts)
{
  return nbdc_address_to_uri (&opts->addr, opts->tls == NBDC_TLS_REQUIRE);
}
