/* nbdfs — fsync, fdatasync and close-time flush: NBD_CMD_FLUSH on every
 * connection of the file's pool that has written since its last flush
 * (nbd-proto.md "Multi-conn": only then is every acked write on every
 * connection persistent). NBD has no metadata to sync, so fsync and
 * fdatasync are the same.
 *
 * Success also requires that no connection lost acknowledged, unflushed
 * writes since this open file description last heard of such a loss
 * (nbdc_pool_wb_err_check, the kernel's writeback-error model): every
 * description open at the time gets EIO once, on its next fsync or close;
 * later opens do not see it.
 */
#include <errno.h>
#include <fcntl.h>

#include "fuse/fs.h"

typedef struct {
  fuse_req_t req;
  NbdfsFs *fs;
  NbdPool *pool;
  NbdfsOpen *open;            /* the description; valid until release,
                                 which waits for this reply */
} FlushOp;

static void
flush_done (void *opaque, int err)
{
  FlushOp *op = opaque;
  NbdfsFs *fs = op->fs;

  /* Checked after the flush: a loss found while it ran counts too. The
   * sample moves on even when the flush failed (that was the report). */
  int wb = op->open ? nbdc_pool_wb_err_check (op->pool, &op->open->wb_sample)
    : 0;
  if (!err)
    err = wb;
  fuse_reply_err (op->req, err);
  g_free (op);
  nbdfs_req_end (fs);
}

static void
start_flush (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
             const char *why)
{
  NbdfsFs *fs = nbdfs_fs (req);
  NbdfsFile *f = nbdfs_file_by_ino (fs, ino);

  if (f == NULL) {
    fuse_reply_err (req, ino == FUSE_ROOT_ID ? 0 : ENOENT);
    return;
  }
  if (f->read_only) {
    fuse_reply_err (req, 0);
    return;
  }
  FlushOp *op = g_new (FlushOp, 1);
  op->req = req;
  op->fs = fs;
  op->pool = f->pool;
  op->open = fi ? (NbdfsOpen *) (uintptr_t) fi->fh : NULL;
  if (fs->debug)
    g_debug ("%s: %s -> flush", f->name, why);
  nbdfs_req_begin (fs);
  nbdc_pool_flush (f->pool, flush_done, op);
}

void
nbdfs_fuse_fsync (fuse_req_t req, fuse_ino_t ino, int datasync,
                  struct fuse_file_info *fi)
{
  start_flush (req, ino, fi, datasync ? "fdatasync" : "fsync");
}

/* FUSE_FLUSH comes with every close() of a descriptor that may have
 * written (read-only opens set noflush). Flushing there makes data
 * written through a descriptor durable once it is closed, as users of
 * nbd-client/qemu expect from a disk image; the pool makes it free when
 * nothing was written since the last flush. */
void
nbdfs_fuse_flush (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  const NbdfsOpen *o = (const NbdfsOpen *) (uintptr_t) fi->fh;
  if ((o->flags & O_ACCMODE) == O_RDONLY) {
    fuse_reply_err (req, 0);
    return;
  }
  start_flush (req, ino, fi, "close");
}
