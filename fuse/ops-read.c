/* nbdfs — FUSE read: one pool read per request, answered from the reader
 * thread. Reads at or past the end of the export return what is left
 * (possibly nothing), as for a regular file.
 */
#include <errno.h>

#include "fuse/fs.h"

typedef struct {
  fuse_req_t req;
  NbdfsFs *fs;
  size_t count;
  char data[];                /* the buffer the pool reads into */
} ReadOp;

static void
read_done (void *opaque, int err)
{
  ReadOp *op = opaque;
  NbdfsFs *fs = op->fs;

  if (err)
    fuse_reply_err (op->req, err);
  else
    fuse_reply_buf (op->req, op->data, op->count);
  g_free (op);
  nbdfs_req_end (fs);
}

void
nbdfs_fuse_read (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                 struct fuse_file_info *fi)
{
  NbdfsFs *fs = nbdfs_fs (req);
  NbdfsFile *f = nbdfs_file_for_io (req, fs, ino);

  if (f == NULL)
    return;
  if (off < 0) {
    fuse_reply_err (req, EINVAL);
    return;
  }
  if ((uint64_t) off >= f->exp.size || size == 0) {
    fuse_reply_buf (req, NULL, 0);
    return;
  }
  if (size > f->exp.size - off)
    size = f->exp.size - off;

  ReadOp *op = g_try_malloc (sizeof *op + size);
  if (op == NULL) {
    fuse_reply_err (req, ENOMEM);
    return;
  }
  op->req = req;
  op->fs = fs;
  op->count = size;
  if (fs->debug)
    g_debug ("%s: read %zu bytes at %jd", f->name, size, (intmax_t) off);
  nbdfs_req_begin (fs);
  nbdc_pool_pread (f->pool, op->data, size, off, read_done, op);
}
