/* nbdfs — FUSE_INIT: tell the kernel how much it may send us at once.
 * These numbers decide whether 1 MiB O_DIRECT requests and a queue depth
 * of 32 reach the pool at all (design.md "The FUSE data path...").
 */
#include "fuse/fs.h"

/* Background requests (readahead, async direct I/O) the kernel keeps in
 * flight; its default of 12 would cap the queue depth far below what the
 * connections take (4 x 64). The congestion threshold is where writeback
 * and readahead start to throttle. */
#define NBDFS_MAX_BACKGROUND 256
#define NBDFS_CONGESTION_THRESHOLD 192

static void
want (struct fuse_conn_info *conn, unsigned cap)
{
  if (conn->capable & cap)
    conn->want |= cap;
}

void
nbdfs_fuse_init (void *userdata, struct fuse_conn_info *conn)
{
  NbdfsFs *fs = userdata;

  /* libfuse caps this at its buffer size (FUSE_MAX_MAX_PAGES pages) and
   * asks the kernel for max_pages accordingly (FUSE_MAX_PAGES). */
  conn->max_write = nbdfs_loop_splice_enabled () ? NBDFS_MAX_WRITE_SPLICED
                                                 : NBDFS_MAX_WRITE;
  conn->max_background = NBDFS_MAX_BACKGROUND;
  conn->congestion_threshold = NBDFS_CONGESTION_THRESHOLD;
  /* The kernel takes the smaller of this and the bdi's window, which
   * mount.c raised before this request was answered (tune.c). */
  conn->max_readahead = NBDFS_MAX_WRITE;

  /* Several reads in flight per file (readahead and O_DIRECT aio). */
  want (conn, FUSE_CAP_ASYNC_READ);
  want (conn, FUSE_CAP_ASYNC_DIO);
  /* open(O_TRUNC) comes to open(), where we ignore it (fixed size), rather
   * than as a setattr(size 0) we would have to refuse. */
  want (conn, FUSE_CAP_ATOMIC_O_TRUNC);
  /* Only we write the export through this mount: a changed mtime must not
   * throw away the page cache. */
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  /* No writeback cache: a write is acknowledged only once the server has
   * it, so stopping the daemon can never drop acknowledged data. */
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  /* libfuse's own splicing would copy a write's payload out of its pipe
   * for us; loop.c splices by itself, only while large writes come, and
   * keeps the pipe (pipes.c). */
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE
                  | FUSE_CAP_SPLICE_MOVE);

  if (fs->debug)
    g_debug ("FUSE init: protocol %u.%u, max_write %u, max_read %u, "
             "max_readahead %u, max_background %u, capable 0x%x, want 0x%x",
             conn->proto_major, conn->proto_minor, conn->max_write,
             conn->max_read, conn->max_readahead, conn->max_background,
             conn->capable, conn->want);
}
