/* nbdfs — fallocate(2) on the export file.
 *
 * FALLOC_FL_PUNCH_HOLE (always with KEEP_SIZE): man 2 fallocate promises
 * that "subsequent reads from this range will return zeroes". NBD_CMD_TRIM
 * cannot keep that promise: nbd-proto.md "NBD_CMD_TRIM" says a read of
 * trimmed data returns unspecified contents, and servers really do leave
 * the old data (trim is advisory). NBD_CMD_WRITE_ZEROES *without*
 * NBD_CMD_FLAG_NO_HOLE says exactly what punching a hole means: the range
 * reads as zeroes afterwards and the server MAY deallocate it ("the server
 * MAY use trimming to zero out the area" unless NO_HOLE). So PUNCH_HOLE ->
 * nbdc_pool_zero (flags 0). Without NBD_FLAG_SEND_WRITE_ZEROES the pool
 * writes zero buffers: still correct, just nothing deallocated.
 *
 * FALLOC_FL_ZERO_RANGE: zeroes, with the blocks kept allocated ("blocks
 * are preallocated for the regions that span the holes") ->
 * NBD_CMD_WRITE_ZEROES with NO_HOLE (same fallback).
 *
 * mode 0 / KEEP_SIZE (allocate): every byte of the export already exists
 * as far as we can tell, so it succeeds inside the file. Anything that
 * would grow the file fails with ENOSPC; other modes (COLLAPSE_RANGE,
 * INSERT_RANGE, UNSHARE_RANGE...) with EOPNOTSUPP.
 */
#include <errno.h>
#include <linux/falloc.h>

#include "fuse/fs.h"
#include "nbdclient/protocol.h"

typedef struct {
  fuse_req_t req;
  NbdfsFs *fs;
} ZeroOp;

static void
zero_done (void *opaque, int err)
{
  ZeroOp *op = opaque;
  NbdfsFs *fs = op->fs;

  fuse_reply_err (op->req, err);
  g_free (op);
  nbdfs_req_end (fs);
}

void
nbdfs_fuse_fallocate (fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
                      off_t length, struct fuse_file_info *fi)
{
  NbdfsFs *fs = nbdfs_fs (req);
  NbdfsFile *f = nbdfs_file_for_io (req, fs, ino);
  const int known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
    | FALLOC_FL_ZERO_RANGE;

  if (f == NULL)
    return;
  if ((mode & ~known) != 0
      || ((mode & FALLOC_FL_PUNCH_HOLE) && (mode & FALLOC_FL_ZERO_RANGE))) {
    fuse_reply_err (req, EOPNOTSUPP);
    return;
  }
  if (offset < 0 || length <= 0 || offset > INT64_MAX - length) {
    fuse_reply_err (req, EINVAL);
    return;
  }
  if (f->read_only) {
    fuse_reply_err (req, EROFS);
    return;
  }

  uint64_t size = f->exp.size;
  uint64_t start = offset, end = (uint64_t) offset + length;
  gboolean keep_size = (mode & (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE))
    != 0;
  if (end > size && !keep_size) {
    /* It would make the file bigger: the export cannot grow. */
    fuse_reply_err (req, ENOSPC);
    return;
  }
  end = MIN (end, size);
  if (!(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
      || start >= end) {
    fuse_reply_err (req, 0);
    return;
  }

  uint32_t flags = (mode & FALLOC_FL_ZERO_RANGE) ? NBD_CMD_FLAG_NO_HOLE : 0;
  ZeroOp *op = g_new (ZeroOp, 1);
  op->req = req;
  op->fs = fs;
  if (fs->debug)
    g_debug ("%s: fallocate %s [%" G_GUINT64_FORMAT ", +%" G_GUINT64_FORMAT
             ") -> write zeroes%s", f->name,
             (mode & FALLOC_FL_ZERO_RANGE) ? "zero-range" : "punch-hole",
             start, end - start, flags ? " (no hole)" : "");
  nbdfs_req_begin (fs);
  nbdc_pool_zero (f->pool, end - start, start, flags, zero_done, op);
}
