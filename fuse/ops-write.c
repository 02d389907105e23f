/* nbdfs — FUSE write: one pool request, replied to from the reader thread
 * once the server acked. The payload must outlive the handler: large
 * writes take the whole request buffer from the session loop (loop.c, no
 * copy); small ones (below NBDFS_TAKE_MIN, where a copy is cheaper than a
 * fresh 1 MiB receive buffer) are copied.
 *
 * Writes that must be durable on return — files opened O_SYNC/O_DSYNC and
 * pwritev2(RWF_DSYNC/RWF_SYNC), which the kernel reports as O_DSYNC/O_SYNC
 * in the FUSE_WRITE flags — carry NBD_CMD_FLAG_FUA (nbd-proto.md "Request
 * flags"); the pool turns FUA into write + flush when the server lacks
 * NBD_FLAG_SEND_FUA.
 *
 * The file cannot grow: a write starting at or past the end fails with
 * ENOSPC (as on a full block device); one that crosses the end writes what
 * fits and returns the shorter count, so the caller sees it, and its next
 * write gets ENOSPC. Never silently truncated.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "fuse/fs.h"
#include "nbdclient/protocol.h"

#define NBDFS_TAKE_MIN (64 * 1024)

typedef struct {
  fuse_req_t req;
  NbdfsFs *fs;
  size_t count;
  void *taken;                /* the loop's request buffer, or NULL */
  const char *data;           /* payload: inside taken, or copy */
  char copy[];
} WriteOp;

static void
write_done (void *opaque, int err)
{
  WriteOp *op = opaque;
  NbdfsFs *fs = op->fs;

  if (err)
    fuse_reply_err (op->req, err);
  else
    fuse_reply_write (op->req, op->count);
  free (op->taken);
  g_free (op);
  nbdfs_req_end (fs);
}

void
nbdfs_fuse_write (fuse_req_t req, fuse_ino_t ino, const char *buf,
                  size_t size, off_t off, struct fuse_file_info *fi)
{
  NbdfsFs *fs = nbdfs_fs (req);
  NbdfsFile *f = nbdfs_file_for_io (req, fs, ino);
  uint32_t flags = 0;

  if (f == NULL)
    return;
  if (f->read_only) {
    fuse_reply_err (req, EROFS);
    return;
  }
  if (off < 0) {
    fuse_reply_err (req, EINVAL);
    return;
  }
  if (size == 0) {
    fuse_reply_write (req, 0);
    return;
  }
  if ((uint64_t) off >= f->exp.size) {
    if (fs->debug)
      g_debug ("%s: write at %jd: past the end (%" G_GUINT64_FORMAT
               " bytes): ENOSPC", f->name, (intmax_t) off, f->exp.size);
    fuse_reply_err (req, ENOSPC);
    return;
  }
  if (size > f->exp.size - off)
    size = f->exp.size - off;
  /* O_SYNC includes the O_DSYNC bit; page-cache writeback (writepage)
   * carries no open flags. */
  if (!fi->writepage && (fi->flags & O_DSYNC) == O_DSYNC)
    flags |= NBD_CMD_FLAG_FUA;

  void *taken = size >= NBDFS_TAKE_MIN ? nbdfs_loop_take_buffer (buf, size)
                                       : NULL;
  WriteOp *op = g_try_malloc (sizeof *op + (taken ? 0 : size));
  if (op == NULL) {
    /* The buffer goes back to nobody: free it ourselves. */
    free (taken);
    fuse_reply_err (req, ENOMEM);
    return;
  }
  op->req = req;
  op->fs = fs;
  op->count = size;
  op->taken = taken;
  if (taken)
    op->data = buf;
  else {
    memcpy (op->copy, buf, size);
    op->data = op->copy;
  }
  if (fs->debug)
    g_debug ("%s: write %zu bytes at %jd%s", f->name, size, (intmax_t) off,
             flags & NBD_CMD_FLAG_FUA ? " (fua)" : "");
  nbdfs_req_begin (fs);
  nbdc_pool_pwrite (f->pool, op->data, size, off, flags, write_done, op);
}
