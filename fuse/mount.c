/* nbdfs — FUSE mode lifecycle: check the mount point, open the pool(s),
 * mount, serve, and on SIGTERM/SIGINT/SIGHUP or an unmount shut down
 * without losing an acknowledged write.
 *
 * Start-up: the program layer checks (nbdfs_fuse_check), daemonises, then
 * calls nbdfs_fuse_start in the process that serves; threads are only
 * ever created there, after any fork.
 *
 * Shutdown: the loop ends (signal, fusermount3 -u), we unmount (lazily, so
 * new users see an empty directory), wait for every request still owed a
 * reply, then close the pools: flush whatever was written since the last
 * flush and send NBD_CMD_DISC. We mount with auto_unmount, so even kill -9
 * leaves no dead mount behind (fusermount3 unmounts when our fd closes).
 *
 * Signals: TERM/INT/HUP are blocked while the pool readers and the worker
 * thread are created, so those threads never take them; libfuse's
 * handlers then run in the main thread (loop.c keeps them out of its
 * threads and whatever those start), which is what wakes the session
 * loop.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gio.h>

#include "fuse/fs.h"
#include "nbdclient/error.h"

/* Seconds a shutdown waits for a lost server to come back, and for
 * everything (requests in flight, the final flush) before giving up on
 * the server. */
#define NBDFS_SHUTDOWN_RECONNECT_GRACE 5
#define NBDFS_SHUTDOWN_WAIT 10

static const struct fuse_lowlevel_ops nbdfs_ops = {
  .init = nbdfs_fuse_init,
  .lookup = nbdfs_fuse_lookup,
  .getattr = nbdfs_fuse_getattr,
  .setattr = nbdfs_fuse_setattr,
  .readdir = nbdfs_fuse_readdir,
  .open = nbdfs_fuse_open,
  .release = nbdfs_fuse_release,
  .statfs = nbdfs_fuse_statfs,
  .read = nbdfs_fuse_read,
  .write = nbdfs_fuse_write,
  .write_buf = nbdfs_fuse_write_buf,
  .flush = nbdfs_fuse_flush,
  .fsync = nbdfs_fuse_fsync,
  .fallocate = nbdfs_fuse_fallocate,
  .lseek = nbdfs_fuse_lseek,
};

/* ---- requests owed a reply ---- */

/* The counter is touched twice per FUSE request, so it is atomic, and the
 * lock and condition are used only while someone drains (shutdown): at
 * queue depth 1 a broadcast per request was a futex call per request.
 * Sequentially consistent atomics make the hand-off safe: either the
 * drainer sees the count reach zero, or the last request sees the drainer
 * and wakes it under the lock the drainer waits with. */
void
nbdfs_req_begin (NbdfsFs *fs)
{
  g_atomic_int_inc (&fs->inflight);
}

void
nbdfs_req_end (NbdfsFs *fs)
{
  g_assert (g_atomic_int_get (&fs->inflight) > 0);
  if (g_atomic_int_dec_and_test (&fs->inflight)
      && g_atomic_int_get (&fs->draining)) {
    g_mutex_lock (&fs->inflight_lock);
    g_cond_broadcast (&fs->inflight_cond);
    g_mutex_unlock (&fs->inflight_lock);
  }
}

gboolean
nbdfs_req_drain_until (NbdfsFs *fs, gint64 deadline)
{
  g_mutex_lock (&fs->inflight_lock);
  g_atomic_int_set (&fs->draining, 1);
  while (g_atomic_int_get (&fs->inflight) > 0) {
    gint64 until = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
    if (deadline && deadline < until)
      until = deadline;
    if (!g_cond_wait_until (&fs->inflight_cond, &fs->inflight_lock, until)) {
      if (deadline && g_get_monotonic_time () >= deadline)
        break;
      g_warning ("shutting down: still waiting for %u request(s) the "
                 "server has not answered",
                 (guint) g_atomic_int_get (&fs->inflight));
    }
  }
  gboolean drained = g_atomic_int_get (&fs->inflight) == 0;
  g_atomic_int_set (&fs->draining, 0);
  g_mutex_unlock (&fs->inflight_lock);
  return drained;
}

void
nbdfs_req_drain (NbdfsFs *fs)
{
  nbdfs_req_drain_until (fs, 0);
}

/* ---- the mount point ---- */

/* Returns the absolute path of a usable mount point, or NULL with error. */
static char *
check_mountpoint (const char *target, gboolean nonempty_ok, GError **error)
{
  char *path = realpath (target, NULL);
  struct stat st;

  if (path == NULL || stat (path, &st) != 0) {
    int e = errno;
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e),
                 "mount point %s: %s%s", target, g_strerror (e),
                 e == ENOENT ? " (create the directory first)" : "");
    free (path);
    return NULL;
  }
  if (!S_ISDIR (st.st_mode)) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "mount point %s is not a directory", target);
    free (path);
    return NULL;
  }
  if (!nonempty_ok) {
    DIR *d = opendir (path);
    struct dirent *de;
    gboolean empty = TRUE;
    if (d == NULL) {
      int e = errno;
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e),
                   "mount point %s: %s", target, g_strerror (e));
      free (path);
      return NULL;
    }
    while (empty && (de = readdir (d)) != NULL)
      if (strcmp (de->d_name, ".") != 0 && strcmp (de->d_name, "..") != 0)
        empty = FALSE;
    closedir (d);
    if (!empty) {
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                   "mount point %s is not empty: use an empty directory "
                   "(or -o nonempty to hide its contents)", target);
      free (path);
      return NULL;
    }
  }
  if (access ("/dev/fuse", R_OK | W_OK) != 0) {
    int e = errno;
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e),
                 "/dev/fuse: %s (FUSE mode needs it: modprobe fuse, or use "
                 "--kernel)", g_strerror (e));
    free (path);
    return NULL;
  }
  char *r = g_strdup (path);
  free (path);
  return r;
}

/* Builds the libfuse argument vector: our defaults, then the user's -o
 * options (so theirs win). "nonempty" is ours, not libfuse's: it is
 * removed here and reported in *nonempty. */
static GPtrArray *
build_fuse_args (const NbdfsFuseOptions *o, gboolean *nonempty)
{
  GPtrArray *a = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *where = nbdc_address_describe (&o->nbd->addr);

  /* fsname shows in /proc/mounts and df; commas would split the option. */
  g_strdelimit (where, ",", '_');
  g_ptr_array_add (a, g_strdup ("nbdfs"));
  g_ptr_array_add (a, g_strdup ("-o"));
  g_ptr_array_add (a, g_strdup_printf ("fsname=nbdfs:%s,subtype=nbdfs,"
                                       "auto_unmount,default_permissions",
                                       where));
  *nonempty = FALSE;
  for (char *const *opt = o->fuse_opts; opt && *opt; opt++) {
    g_auto (GStrv) parts = g_strsplit (*opt, ",", -1);
    g_autoptr (GPtrArray) kept = g_ptr_array_new ();
    for (char **p = parts; *p; p++) {
      if (strcmp (*p, "nonempty") == 0)
        *nonempty = TRUE;
      else if (**p)
        g_ptr_array_add (kept, *p);
    }
    if (kept->len == 0)
      continue;
    g_ptr_array_add (kept, NULL);
    g_ptr_array_add (a, g_strdup ("-o"));
    g_ptr_array_add (a, g_strjoinv (",", (char **) kept->pdata));
  }
  if (o->verbose && g_getenv ("NBDFS_FUSE_DEBUG"))
    g_ptr_array_add (a, g_strdup ("-d"));
  g_ptr_array_add (a, NULL);
  return a;
}

char *
nbdfs_fuse_check (const NbdfsFuseOptions *o, GError **error)
{
  gboolean nonempty;
  g_autoptr (GPtrArray) probe = build_fuse_args (o, &nonempty);

  return check_mountpoint (o->mountpoint, nonempty, error);
}

/* ---- start, serve, stop ---- */

/* Large writes travel in pipes (loop.c, pipes.c) only when asked for with
 * NBDFS_SPLICE=1, and never over TLS (gnutls must see the bytes) or when
 * this process cannot size a pipe to hold a request. Off by default: the
 * daemon saves two copies per written byte, but the server receiving
 * page-reference segments spent twice the CPU copying them out (nbdkit,
 * Unix socket and TCP loopback: README "Writes by reference"), a net loss
 * where both share the machine. */
static void
splice_setup (NbdfsFs *fs)
{
  const char *why = NULL;
  for (guint i = 0; i < fs->files->len && !why; i++)
    if (((NbdfsFile *) g_ptr_array_index (fs->files, i))->exp.tls)
      why = "TLS";
  if (!why && g_strcmp0 (g_getenv ("NBDFS_SPLICE"), "1") != 0)
    why = "NBDFS_SPLICE=1 splices them";
  NbdfsPipe *probe = why ? NULL : nbdfs_pipe_get ();
  if (!why && !probe)
    why = "a pipe cannot hold a whole request (see /proc/sys/fs/pipe-max-size)";
  nbdfs_pipe_put (probe);
  nbdfs_loop_enable_splice (why == NULL);
  if (why)
    g_debug ("large writes go through memory: %s", why);
  else
    g_debug ("large writes go to the server by reference (splice)");
}

NbdfsFs *
nbdfs_fuse_start (const NbdfsFuseOptions *o, const char *mountpoint,
                  GError **error)
{
  NbdfsFs *fs = g_new0 (NbdfsFs, 1);
  gboolean nonempty;

  /* Every large request lives in a buffer of up to 1 MiB (max_write) that
   * is allocated on one thread and freed on the connection's reader. With
   * glibc's defaults those come and go as fresh mappings or trimmed heap,
   * and the benchmark showed 15-18% of the daemon's CPU in page faults and
   * page clearing at 1 MiB queue depth 16. Keep them in the heap and keep
   * up to 64 MiB of freed heap for reuse. */
  mallopt (M_MMAP_THRESHOLD, 4 << 20);
  mallopt (M_TRIM_THRESHOLD, 64 << 20);
  nbdfs_fuse_log_to_glib ();

  fs->opts = o;
  fs->mountpoint = g_strdup (mountpoint);
  fs->reaper = -1;
  fs->uid = getuid ();
  fs->gid = getgid ();
  fs->root_mode = S_IFDIR | 0755;
  clock_gettime (CLOCK_REALTIME, &fs->root_time);
  fs->debug = o->verbose;
  g_mutex_init (&fs->lock);
  g_mutex_init (&fs->inflight_lock);
  g_cond_init (&fs->inflight_cond);
  fs->argv = build_fuse_args (o, &nonempty);
  fs->args = (struct fuse_args) FUSE_ARGS_INIT (fs->argv->len - 1,
                                                (char **) fs->argv->pdata);

  sigemptyset (&fs->stop_signals);
  sigaddset (&fs->stop_signals, SIGTERM);
  sigaddset (&fs->stop_signals, SIGINT);
  sigaddset (&fs->stop_signals, SIGHUP);
  pthread_sigmask (SIG_BLOCK, &fs->stop_signals, &fs->old_mask);

  /* Options first: a typo should not cost a connection. No op runs
   * before the session loop, so fs may still be empty here. */
  fs->se = fuse_session_new (&fs->args, &nbdfs_ops, sizeof nbdfs_ops, fs);
  if (fs->se == NULL) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "FUSE refused the mount options (see the message above)");
    goto fail;
  }
  if (!nbdfs_files_open (fs, error))
    goto fail;
  if (!nbdfs_worker_start (fs, error))
    goto fail;
  for (guint i = 0; i < fs->files->len; i++)
    nbdfs_allocation_refresh (fs, g_ptr_array_index (fs->files, i));
  splice_setup (fs);

  /* libfuse only takes over signals left at SIG_DFL; a shell starts
   * background jobs with SIGINT ignored, and "SIGINT stops nbdfs cleanly"
   * should hold there too. (SIGHUP stays as inherited, for nohup.) */
  signal (SIGINT, SIG_DFL);
  signal (SIGTERM, SIG_DFL);
  if (fuse_set_signal_handlers (fs->se) != 0) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_FAILED,
                 "cannot install signal handlers");
    goto fail;
  }
  fs->handlers = TRUE;
  if (fuse_session_mount (fs->se, mountpoint) != 0) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_FAILED,
                 "mounting on %s failed (see the message above)",
                 mountpoint);
    goto fail;
  }
  fs->mounted = TRUE;
  if (getuid () != 0)
    fs->reaper = nbdfs_reaper_start (mountpoint);
  nbdfs_tune_readahead (mountpoint);
  return fs;

fail:
  nbdfs_fuse_stop (fs);
  return NULL;
}

void
nbdfs_fuse_serve (NbdfsFs *fs)
{
  g_message ("serving %u file(s) from %s on %s", fs->files->len,
             fs->opts->nbd->addr.socket_path ? fs->opts->nbd->addr.socket_path
             : fs->opts->nbd->addr.host, fs->mountpoint);
  pthread_sigmask (SIG_SETMASK, &fs->old_mask, NULL);
  int r = nbdfs_loop_run (fs->se);
  g_debug ("session loop ended (%d)", r);
  pthread_sigmask (SIG_BLOCK, &fs->stop_signals, NULL);
  fs->served = TRUE;
}

gboolean
nbdfs_fuse_stop (NbdfsFs *fs)
{
  gboolean ok = fs->served;

  if (fs->mounted)
    fuse_session_unmount (fs->se);
  nbdfs_reaper_disarm (fs->reaper);
  /* A server on its way back gets a short grace, not the whole reconnect
   * window: shutdown must end in bounded time (requests parked for it
   * then fail with EIO; a write among them was never acknowledged). */
  for (guint i = 0; fs->files && i < fs->files->len; i++)
    nbdc_pool_limit_reconnect (((NbdfsFile *) g_ptr_array_index
                                (fs->files, i))->pool,
                               NBDFS_SHUTDOWN_RECONNECT_GRACE);
  /* Every reply the kernel is owed goes out (or fails harmlessly after the
   * unmount) before the session and the pools go away. Requests still
   * unanswered and the final flush get NBDFS_SHUTDOWN_WAIT seconds in
   * all: past that the pools give up on the server (EIO), so a silent
   * server cannot hold the exit for a whole request timeout. */
  gint64 deadline = g_get_monotonic_time ()
    + (gint64) NBDFS_SHUTDOWN_WAIT * G_USEC_PER_SEC;
  if (!nbdfs_req_drain_until (fs, deadline)) {
    g_warning ("shutting down: requests unanswered after %u s; giving up on "
               "the server (they fail with EIO)", NBDFS_SHUTDOWN_WAIT);
    for (guint i = 0; fs->files && i < fs->files->len; i++)
      nbdc_pool_abort (((NbdfsFile *) g_ptr_array_index (fs->files, i))->pool,
                       "shutting down: the server did not answer in time");
  }
  nbdfs_req_drain (fs);
  nbdfs_worker_stop (fs);
  nbdfs_req_drain (fs);
  if (nbdfs_files_close (fs, deadline) != 0)
    ok = FALSE;
  if (fs->handlers)
    fuse_remove_signal_handlers (fs->se);
  if (fs->se)
    fuse_session_destroy (fs->se);
  fuse_opt_free_args (&fs->args);
  g_ptr_array_unref (fs->argv);
  g_mutex_clear (&fs->lock);
  g_mutex_clear (&fs->inflight_lock);
  g_cond_clear (&fs->inflight_cond);
  if (ok)
    g_message ("unmounted %s", fs->mountpoint);
  g_free (fs->mountpoint);
  g_free (fs);
  return ok;
}
