/* nbdfs — FUSE mode internals shared by the op files (ops-*.c), the file
 * table (files.c) and the lifecycle (mount.c).
 *
 * Threading (cf. libnbd fuse/operations.c "NOTES ON THE THREAD MODEL"):
 * libfuse worker threads call the op handlers; a handler turns the request
 * into nbdc_pool_* calls and returns without waiting. The completion runs
 * on a connection's reader thread and calls fuse_reply_*. Ops that must
 * loop over several replies (lseek) go to one helper thread (worker.c) so
 * neither libfuse workers nor readers ever block on the server.
 * Every request that is still owed a reply is counted (nbdfs_req_begin /
 * nbdfs_req_end) so shutdown can wait for them before closing the pools.
 * The per-request structs of the op files (ReadOp, WriteOp, FlushOp,
 * ZeroOp, SeekJob) have one owner at a time and need no lock: the handler
 * fills them, then hands them to the pool (or the worker), whose
 * completion replies and frees them.
 */
#ifndef NBDFS_FUSE_FS_H
#define NBDFS_FUSE_FS_H

#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <fuse_lowlevel.h>
#include <glib.h>

#include "fuse/mount.h"
#include "nbdclient/pool.h"

/* The file for the default export (empty name) when --name is not given. */
#define NBDFS_DEFAULT_FILE_NAME "disk"
/* Inode numbers: the root directory is FUSE_ROOT_ID (1); file i is i + 2. */
#define NBDFS_FIRST_FILE_INO 2
/* How long the kernel may cache attributes and names: nothing changes
 * behind its back (sizes are fixed, only we change modes and times). */
#define NBDFS_ATTR_TIMEOUT 60.0

typedef struct {
  /* Set at start (files.c), read-only while serving: */
  fuse_ino_t ino;
  char *name;                 /* the file name in the mount */
  char *export_name;          /* the NBD export behind it */
  NbdPool *pool;
  NbdExport exp;
  gboolean read_only;         /* server flag or -r */
  /* In-memory attributes (chmod/chown/utimes); under NbdfsFs.lock. */
  mode_t mode;
  uid_t uid;
  gid_t gid;
  struct timespec atime, mtime, ctime;
  /* Allocated bytes from base:allocation (st_blocks); -1 while unknown.
   * Refreshed by the worker thread, read with g_atomic. */
  gint64 allocated;
  gint64 allocated_at;        /* g_get_monotonic_time of the last scan */
  gint scan_queued;           /* a scan is queued (atomic) */
  /* Open descriptions (NbdfsOpen *, owned: freed on removal), under
   * NbdfsFs.lock: at unmount, one not yet told of a lost write makes the
   * exit status say so. */
  GHashTable *opens;
} NbdfsFile;

/* Threads: the starting thread fills what is marked "set at start"
 * before the session loop runs; libfuse workers, pool readers and the
 * worker thread then only read it. */
struct NbdfsFs {
  const NbdfsFuseOptions *opts; /* set at start */
  GPtrArray *files;           /* NbdfsFile *, index = ino - 2; set at start */
  GMutex lock;                /* attributes of the files and the root */
  uid_t uid;                  /* the mounting user; set at start */
  gid_t gid;
  mode_t root_mode;           /* lock */
  struct timespec root_time;  /* lock (set at start) */
  gboolean debug;             /* cheap guard for per-request g_debug; set
                                 at start */
  /* Requests owed a reply (see above). */
  GMutex inflight_lock;
  GCond inflight_cond;        /* with inflight_lock */
  gint inflight;               /* requests owed a reply (atomic) */
  gint draining;               /* someone waits in drain (atomic) */
  /* The helper thread's queue (worker.c): created and freed by the
   * starting/stopping thread, used through GAsyncQueue's own lock. */
  GAsyncQueue *jobs;
  GThread *worker;            /* the starting/stopping thread only */
  gint stopping;              /* set before the stop job is queued (atomic) */
  /* The session (mount.c): only the thread that starts, serves and stops
   * touches these. */
  struct fuse_session *se;
  struct fuse_args args;
  GPtrArray *argv;            /* what args points into */
  char *mountpoint;
  gboolean mounted, handlers, served;
  int reaper;
  sigset_t stop_signals, old_mask;
};

/* One open file description (fi->fh): what open asked for, and its
 * sample of the export's writeback error sequence (nbdc_pool_wb_err_*),
 * so each description learns of a lost write once, on its next fsync or
 * close (the kernel's errseq_t semantics). */
typedef struct {
  int flags;                  /* open(2) flags */
  unsigned wb_sample;         /* g_atomic, via nbdc_pool_wb_err_check */
} NbdfsOpen;

/* ---- files.c: names and the export table ---- */

/* A file name for export NAME: see files.c for the rules. Caller frees. */
char *nbdfs_file_name_for_export (const char *export_name);
/* Opens the pool(s) and fills fs->files. Returns FALSE with error set. */
gboolean nbdfs_files_open (NbdfsFs *fs, GError **error);
/* Closes every pool (flush + NBD_CMD_DISC), giving up on the server at
 * deadline (monotonic us, 0 = never). Returns 0 or the first errno. */
int nbdfs_files_close (NbdfsFs *fs, gint64 deadline);
NbdfsFile *nbdfs_file_by_ino (NbdfsFs *fs, fuse_ino_t ino);
/* The file an op on it (open, read, write, fallocate, lseek) is for, or
 * NULL after replying EISDIR (the root) or ENOENT. */
NbdfsFile *nbdfs_file_for_io (fuse_req_t req, NbdfsFs *fs, fuse_ino_t ino);
NbdfsFile *nbdfs_file_by_name (NbdfsFs *fs, const char *name);

/* ---- ops-attr.c: attributes ---- */

void nbdfs_fill_attr (NbdfsFs *fs, fuse_ino_t ino, struct stat *st);

/* ---- requests owed a reply ---- */

static inline NbdfsFs *
nbdfs_fs (fuse_req_t req)
{
  return fuse_req_userdata (req);
}

void nbdfs_req_begin (NbdfsFs *fs);
void nbdfs_req_end (NbdfsFs *fs);
/* Waits until no request is owed a reply. */
void nbdfs_req_drain (NbdfsFs *fs);
/* The same, but only until deadline (monotonic us, 0 = never): FALSE if
 * requests are still owed then. */
gboolean nbdfs_req_drain_until (NbdfsFs *fs, gint64 deadline);

/* ---- worker.c: the helper thread for ops that wait ---- */

typedef void (*NbdfsJobFn) (NbdfsFs *fs, void *data);
gboolean nbdfs_worker_start (NbdfsFs *fs, GError **error);
void nbdfs_worker_push (NbdfsFs *fs, NbdfsJobFn fn, void *data);
void nbdfs_worker_stop (NbdfsFs *fs);
/* Synchronous base:allocation query for the worker: calls extent for each
 * extent; returns 0 or errno. */
int nbdfs_block_status_sync (NbdfsFile *f, uint64_t offset, uint64_t length,
                             NbdcExtentFn extent, void *opaque);
/* Queue a background scan of the allocation of f (for st_blocks) unless
 * one ran recently or is queued. */
void nbdfs_allocation_refresh (NbdfsFs *fs, NbdfsFile *f);

/* The largest FUSE write we accept (FUSE_INIT max_write). When writes
 * are spliced (loop.c), a whole request must fit a pipe of 1 MiB (the
 * default /proc/sys/fs/pipe-max-size, which only CAP_SYS_RESOURCE may
 * pass): 256 slots for the header's page and every page the payload
 * touches, so 254 pages at most. */
#define NBDFS_MAX_WRITE (1024 * 1024)
#define NBDFS_MAX_WRITE_SPLICED (NBDFS_MAX_WRITE - 2 * 4096)
#define NBDFS_PIPE_BYTES (1024 * 1024)

/* ---- pipes.c: pipes that carry large writes ---- */

typedef struct {
  int fd[2];                  /* read end, write end */
} NbdfsPipe;

/* A free pipe that holds a whole request, or NULL (none can be sized so:
 * the pipe size limit; or too many exist). */
NbdfsPipe *nbdfs_pipe_get (void);
/* Empties the pipe and keeps it for reuse (or closes it). NULL is fine. */
void nbdfs_pipe_put (NbdfsPipe *p);
gboolean nbdfs_pipe_empty (NbdfsPipe *p);

/* ---- loop.c: the session loop ---- */

/* Serves the session until it exits (signal, unmount). */
int nbdfs_loop_run (struct fuse_session *se);
/* Called from a write handler with its payload: if the payload lies in
 * the request buffer of this loop thread, the handler takes the whole
 * buffer (returned; free() it when done) and the thread receives its next
 * request elsewhere. NULL: copy the payload instead. */
void *nbdfs_loop_take_buffer (const void *data, size_t len);
/* Whether loop threads may splice requests into pipes (set before
 * nbdfs_loop_run), and the hint that they should now: a large write came. */
void nbdfs_loop_enable_splice (gboolean on);
gboolean nbdfs_loop_splice_enabled (void);
void nbdfs_loop_want_splice (void);
/* Called from a write handler whose payload is in the pipe fd: if that is
 * this loop thread's receive pipe, the handler takes it (give it back
 * with nbdfs_pipe_put) and the thread receives into another. */
NbdfsPipe *nbdfs_loop_take_pipe (int fd);

/* ---- reaper.c ---- */

/* Starts the process that unmounts MOUNTPOINT if we die without doing it
 * (non-root: fusermount3's auto_unmount cannot). Returns the fd to give to
 * nbdfs_reaper_disarm at a clean exit, or -1. */
int nbdfs_reaper_start (const char *mountpoint);
void nbdfs_reaper_disarm (int fd);

/* ---- tune.c ---- */

/* Raises the readahead window of the mount (root only, best effort). */
void nbdfs_tune_readahead (const char *mountpoint);

/* ---- log.c ---- */

/* Routes libfuse's messages into GLib's log (domain "libfuse"). */
void nbdfs_fuse_log_to_glib (void);

/* ---- op handlers (one file each) ---- */

void nbdfs_fuse_init (void *userdata, struct fuse_conn_info *conn);
void nbdfs_fuse_lookup (fuse_req_t req, fuse_ino_t parent, const char *name);
void nbdfs_fuse_getattr (fuse_req_t req, fuse_ino_t ino,
                         struct fuse_file_info *fi);
void nbdfs_fuse_setattr (fuse_req_t req, fuse_ino_t ino, struct stat *attr,
                         int to_set, struct fuse_file_info *fi);
void nbdfs_fuse_readdir (fuse_req_t req, fuse_ino_t ino, size_t size,
                         off_t off, struct fuse_file_info *fi);
void nbdfs_fuse_open (fuse_req_t req, fuse_ino_t ino,
                      struct fuse_file_info *fi);
void nbdfs_fuse_release (fuse_req_t req, fuse_ino_t ino,
                         struct fuse_file_info *fi);
void nbdfs_fuse_statfs (fuse_req_t req, fuse_ino_t ino);
void nbdfs_fuse_read (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                      struct fuse_file_info *fi);
void nbdfs_fuse_write (fuse_req_t req, fuse_ino_t ino, const char *buf,
                       size_t size, off_t off, struct fuse_file_info *fi);
void nbdfs_fuse_write_buf (fuse_req_t req, fuse_ino_t ino,
                           struct fuse_bufvec *bufv, off_t off,
                           struct fuse_file_info *fi);
void nbdfs_fuse_flush (fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi);
void nbdfs_fuse_fsync (fuse_req_t req, fuse_ino_t ino, int datasync,
                       struct fuse_file_info *fi);
void nbdfs_fuse_fallocate (fuse_req_t req, fuse_ino_t ino, int mode,
                           off_t offset, off_t length,
                           struct fuse_file_info *fi);
void nbdfs_fuse_lseek (fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                       struct fuse_file_info *fi);

#endif
