/* nbdfs — FUSE write: one pool request, replied to from the reader thread
 * once the server acked. The payload must outlive the handler, and gets
 * there without a copy where it can:
 * - spliced (loop.c, pipes.c): the request arrived in a pipe; a write the
 *   pool can send as one request keeps the pipe, and the server gets the
 *   writer's pages by reference (nbdc_pool_pwrite_pipe); else the payload
 *   is read out of the pipe into memory;
 * - read: large writes take the whole request buffer from the session
 *   loop (loop.c, no copy); small ones (below NBDFS_TAKE_MIN, where a copy
 *   is cheaper than a fresh 1 MiB receive buffer) are copied.
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
#include <unistd.h>

#include "fuse/fs.h"
#include "nbdclient/protocol.h"

#define NBDFS_TAKE_MIN (64 * 1024)

typedef struct {
  fuse_req_t req;
  NbdfsFs *fs;
  size_t count;
  void *taken;                /* the loop's request buffer, or NULL */
  NbdfsPipe *pipe;            /* the payload's pipe, or NULL */
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
  nbdfs_pipe_put (op->pipe);
  g_free (op);
  nbdfs_req_end (fs);
}

/* The checks every write passes. Returns the file and sets *size (cut at
 * the end of the export) and *flags, or replies and returns NULL. */
static NbdfsFile *
write_check (fuse_req_t req, NbdfsFs *fs, fuse_ino_t ino, size_t *size,
             off_t off, struct fuse_file_info *fi, uint32_t *flags)
{
  NbdfsFile *f = nbdfs_file_for_io (req, fs, ino);

  if (f == NULL)
    return NULL;
  if (f->read_only) {
    fuse_reply_err (req, EROFS);
    return NULL;
  }
  if (off < 0) {
    fuse_reply_err (req, EINVAL);
    return NULL;
  }
  if (*size == 0) {
    fuse_reply_write (req, 0);
    return NULL;
  }
  if ((uint64_t) off >= f->exp.size) {
    if (fs->debug)
      g_debug ("%s: write at %jd: past the end (%" G_GUINT64_FORMAT
               " bytes): ENOSPC", f->name, (intmax_t) off, f->exp.size);
    fuse_reply_err (req, ENOSPC);
    return NULL;
  }
  if (*size > f->exp.size - off)
    *size = f->exp.size - off;
  /* O_SYNC includes the O_DSYNC bit; page-cache writeback (writepage)
   * carries no open flags. */
  *flags = 0;
  if (!fi->writepage && (fi->flags & O_DSYNC) == O_DSYNC)
    *flags |= NBD_CMD_FLAG_FUA;
  return f;
}

static void
write_submit (fuse_req_t req, NbdfsFs *fs, NbdfsFile *f, WriteOp *op,
              size_t size, off_t off, uint32_t flags)
{
  op->req = req;
  op->fs = fs;
  op->count = size;
  if (fs->debug)
    g_debug ("%s: write %zu bytes at %jd%s%s", f->name, size, (intmax_t) off,
             flags & NBD_CMD_FLAG_FUA ? " (fua)" : "",
             op->pipe ? " (spliced)" : "");
  nbdfs_req_begin (fs);
  if (op->pipe)
    nbdc_pool_pwrite_pipe (f->pool, op->pipe->fd[0], size, off, flags,
                           write_done, op);
  else
    nbdc_pool_pwrite (f->pool, op->data, size, off, flags, write_done, op);
}

void
nbdfs_fuse_write (fuse_req_t req, fuse_ino_t ino, const char *buf,
                  size_t size, off_t off, struct fuse_file_info *fi)
{
  NbdfsFs *fs = nbdfs_fs (req);
  uint32_t flags;
  NbdfsFile *f = write_check (req, fs, ino, &size, off, fi, &flags);

  if (f == NULL)
    return;
  if (size >= NBDFS_TAKE_MIN)
    nbdfs_loop_want_splice ();
  void *taken = size >= NBDFS_TAKE_MIN ? nbdfs_loop_take_buffer (buf, size)
                                       : NULL;
  WriteOp *op = g_try_malloc0 (sizeof *op + (taken ? 0 : size));
  if (op == NULL) {
    /* The buffer goes back to nobody: free it ourselves. */
    free (taken);
    fuse_reply_err (req, ENOMEM);
    return;
  }
  op->taken = taken;
  if (taken)
    op->data = buf;
  else {
    memcpy (op->copy, buf, size);
    op->data = op->copy;
  }
  write_submit (req, fs, f, op, size, off, flags);
}

static gboolean
read_full (int fd, char *buf, size_t len)
{
  while (len > 0) {
    ssize_t r = read (fd, buf, len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return FALSE;
    buf += r;
    len -= r;
  }
  return TRUE;
}

void
nbdfs_fuse_write_buf (fuse_req_t req, fuse_ino_t ino,
                      struct fuse_bufvec *bufv, off_t off,
                      struct fuse_file_info *fi)
{
  struct fuse_buf *b = &bufv->buf[0];
  size_t size = fuse_buf_size (bufv);

  if (!(b->flags & FUSE_BUF_IS_FD)) {
    nbdfs_fuse_write (req, ino, b->mem, size, off, fi);
    return;
  }

  /* Spliced (loop.c): the payload, size bytes, is all the pipe holds. */
  NbdfsFs *fs = nbdfs_fs (req);
  size_t want = size;
  uint32_t flags;
  NbdfsFile *f = write_check (req, fs, ino, &size, off, fi, &flags);
  if (f == NULL)
    return;                   /* the loop empties the pipe */
  nbdfs_loop_want_splice ();
  NbdfsPipe *p = size == want ? nbdfs_loop_take_pipe (b->fd) : NULL;
  if (p) {
    WriteOp *op = g_new0 (WriteOp, 1);
    op->pipe = p;
    if (nbdc_pool_pwrite_pipe_ok (f->pool, size, off)) {
      write_submit (req, fs, f, op, size, off, flags);
      return;
    }
    g_free (op);
  }

  /* From memory: read the payload out (it came in a pipe either way). */
  WriteOp *op = g_try_malloc0 (sizeof *op + want);
  if (op == NULL) {
    nbdfs_pipe_put (p);
    fuse_reply_err (req, ENOMEM);
    return;
  }
  gboolean ok = read_full (b->fd, op->copy, want);
  nbdfs_pipe_put (p);
  if (!ok) {
    g_free (op);
    fuse_reply_err (req, EIO);
    return;
  }
  op->data = op->copy;
  write_submit (req, fs, f, op, size, off, flags);
}
