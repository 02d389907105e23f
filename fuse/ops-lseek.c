/* nbdfs — lseek SEEK_DATA / SEEK_HOLE from base:allocation
 * (nbd-proto.md "Metadata querying", "base:allocation context").
 *
 * A hole here is a range that reads as zeroes: extents with
 * NBD_STATE_ZERO. NBD_STATE_HOLE alone (unallocated, contents unspecified,
 * e.g. after a trim) is *data*: cp --sparse and qemu-img skip holes without
 * reading them, so calling such a range a hole would lose data. Without
 * base:allocation the whole file is data, which SEEK_DATA/SEEK_HOLE allow
 * ("the simplest implementation ... SEEK_HOLE returns the file size").
 * Offsets at or past the end give ENXIO, as lseek(2) says.
 *
 * The search may need several block-status round trips, each depending on
 * the last, so it runs on the worker thread (worker.c), not in the handler.
 */
#include <errno.h>
#include <unistd.h>

#include "fuse/fs.h"
#include "nbdclient/protocol.h"

typedef struct {
  fuse_req_t req;
  NbdfsFile *file;
  uint64_t offset;
  int whence;
} SeekJob;

typedef struct {
  int whence;
  gboolean found;
  uint64_t result;
  uint64_t next;
} SeekState;

static void
seek_extent (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  SeekState *s = opaque;
  gboolean hole = (flags & NBD_STATE_ZERO) != 0;

  if (s->found)
    return;
  if ((s->whence == SEEK_DATA) != hole) {
    s->found = TRUE;
    s->result = offset;
  }
  s->next = offset + length;
}

static void
seek_job (NbdfsFs *fs, void *data)
{
  SeekJob *job = data;
  NbdfsFile *f = job->file;
  SeekState s = { .whence = job->whence };
  uint64_t pos = job->offset;
  int err = 0;

  while (pos < f->exp.size && !s.found) {
    /* Ask about the whole rest: the pool caps it at what one request
     * can carry (1 GiB with compact headers, all of it with extended
     * ones) and the server may answer for less anyway. */
    uint64_t len = f->exp.size - pos;
    s.next = pos;
    err = nbdfs_block_status_sync (f, pos, len, seek_extent, &s);
    if (err == ENOTSUP) {
      /* No base:allocation after all: everything is data. */
      err = 0;
      if (job->whence == SEEK_DATA) {
        s.found = TRUE;
        s.result = pos;
      }
      break;
    }
    if (err)
      break;
    if (s.next <= pos) {
      /* The pool validates extents, so this is a server that answered
       * with nothing: treat the rest as data rather than loop. */
      if (job->whence == SEEK_DATA) {
        s.found = TRUE;
        s.result = pos;
      }
      break;
    }
    pos = s.next;
  }

  if (err)
    fuse_reply_err (job->req, err);
  else if (s.found)
    fuse_reply_lseek (job->req, MAX (s.result, job->offset));
  else if (job->whence == SEEK_HOLE)
    fuse_reply_lseek (job->req, f->exp.size);  /* the implicit hole at EOF */
  else
    fuse_reply_err (job->req, ENXIO);
  if (fs->debug)
    g_debug ("%s: lseek %s from %" G_GUINT64_FORMAT " -> %s %" G_GUINT64_FORMAT,
             f->name, job->whence == SEEK_DATA ? "SEEK_DATA" : "SEEK_HOLE",
             job->offset, err ? g_strerror (err) : "",
             s.found ? MAX (s.result, job->offset) : f->exp.size);
  g_free (job);
  nbdfs_req_end (fs);
}

void
nbdfs_fuse_lseek (fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                  struct fuse_file_info *fi)
{
  NbdfsFs *fs = nbdfs_fs (req);
  NbdfsFile *f = nbdfs_file_for_io (req, fs, ino);

  if (f == NULL)
    return;
  if (whence != SEEK_DATA && whence != SEEK_HOLE) {
    /* The kernel handles SEEK_SET/CUR/END itself. */
    fuse_reply_err (req, EINVAL);
    return;
  }
  if (off < 0 || (uint64_t) off >= f->exp.size) {
    fuse_reply_err (req, ENXIO);
    return;
  }
  if (!f->exp.base_allocation) {
    fuse_reply_lseek (req, whence == SEEK_DATA ? off : (off_t) f->exp.size);
    return;
  }
  SeekJob *job = g_new (SeekJob, 1);
  job->req = req;
  job->file = f;
  job->offset = off;
  job->whence = whence;
  nbdfs_req_begin (fs);
  nbdfs_worker_push (fs, seek_job, job);
}
