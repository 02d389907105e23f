/* nbdfs — FUSE mode lifecycle: check the mount point, daemonise, open the
 * pool(s), mount, serve, and on SIGTERM/SIGINT/SIGHUP or an unmount shut
 * down without losing an acknowledged write.
 *
 * Start-up (background, the default): the parent forks and waits on a
 * pipe; the child opens the pool(s) and mounts, then reports "ready" (the
 * parent exits 0: the mount is usable) or the error (the parent prints it
 * and exits 1). Threads are only ever created in the child, after the fork.
 *
 * Shutdown: the loop ends (signal, fusermount3 -u), we unmount (lazily, so
 * new users see an empty directory), wait for every request still owed a
 * reply, then close the pools: flush whatever was written since the last
 * flush and send NBD_CMD_DISC. We mount with auto_unmount, so even kill -9
 * leaves no dead mount behind (fusermount3 unmounts when our fd closes).
 *
 * Signals: TERM/INT/HUP are blocked while the pool readers and the worker
 * thread are created, so those threads never take them; libfuse's
 * handlers then run in the main thread or a libfuse worker, which is what
 * wakes the session loop.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
build_fuse_args (NbdfsCli *cli, gboolean *nonempty)
{
  GPtrArray *a = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *where = nbdc_address_describe (&cli->nbd.addr);

  /* fsname shows in /proc/mounts and df; commas would split the option. */
  g_strdelimit (where, ",", '_');
  g_ptr_array_add (a, g_strdup ("nbdfs"));
  g_ptr_array_add (a, g_strdup ("-o"));
  g_ptr_array_add (a, g_strdup_printf ("fsname=nbdfs:%s,subtype=nbdfs,"
                                       "auto_unmount,default_permissions",
                                       where));
  *nonempty = FALSE;
  for (char **o = cli->fuse_opts; o && *o; o++) {
    g_auto (GStrv) parts = g_strsplit (*o, ",", -1);
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
  if (cli->verbose && g_getenv ("NBDFS_FUSE_DEBUG"))
    g_ptr_array_add (a, g_strdup ("-d"));
  g_ptr_array_add (a, NULL);
  return a;
}

static gboolean
write_pidfile (const char *path, GError **error)
{
  g_autofree char *text = g_strdup_printf ("%ld\n", (long) getpid ());
  g_autofree char *tmp = g_strconcat (path, ".tmp", NULL);

  /* Written whole and renamed, so a reader never sees a partial PID. */
  if (!g_file_set_contents (tmp, text, -1, error)
      || rename (tmp, path) != 0) {
    if (error && *error == NULL) {
      int e = errno;
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e),
                   "--pidfile %s: %s", path, g_strerror (e));
    }
    unlink (tmp);
    return FALSE;
  }
  return TRUE;
}

/* ---- start-up handshake with the parent ---- */

/* The child reports on ready_fd: "ok\n" or "error: <message>". */
static void
report_ready (int *ready_fd, const GError *err)
{
  if (*ready_fd < 0)
    return;
  g_autofree char *msg = err ? g_strdup_printf ("error: %s", err->message)
                             : g_strdup ("ok\n");
  size_t len = strlen (msg), off = 0;
  while (off < len) {
    ssize_t n = write (*ready_fd, msg + off, len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    off += n;
  }
  close (*ready_fd);
  *ready_fd = -1;
}

/* The parent: waits for the child's verdict. Returns the exit status. */
static int
wait_for_child (pid_t child, int fd, GError **error)
{
  GString *s = g_string_new (NULL);
  char buf[512];
  ssize_t n;

  while ((n = read (fd, buf, sizeof buf)) != 0) {
    if (n < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    g_string_append_len (s, buf, n);
  }
  close (fd);
  if (strcmp (s->str, "ok\n") == 0) {
    g_string_free (s, TRUE);
    return 0;
  }
  if (g_str_has_prefix (s->str, "error: ")) {
    g_set_error_literal (error, NBDFS_ERROR, NBDFS_ERROR_FAILED,
                         s->str + strlen ("error: "));
    g_string_free (s, TRUE);
    waitpid (child, NULL, 0);
    return -1;
  }
  g_string_free (s, TRUE);
  int status = 0;
  waitpid (child, &status, 0);
  if (WIFSIGNALED (status))
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_FAILED,
                 "the background process died during start-up (signal %d)",
                 WTERMSIG (status));
  else
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_FAILED,
                 "the background process exited during start-up (status "
                 "%d)", WIFEXITED (status) ? WEXITSTATUS (status) : -1);
  return -1;
}

static void
detach_stdio (void)
{
  int fd = open ("/dev/null", O_RDWR);
  if (fd >= 0) {
    dup2 (fd, STDIN_FILENO);
    dup2 (fd, STDOUT_FILENO);
    dup2 (fd, STDERR_FILENO);
    if (fd > STDERR_FILENO)
      close (fd);
  }
}

/* ---- serving ---- */

static int
serve (NbdfsCli *cli, const char *mountpoint, int *ready_fd, GError **error)
{
  NbdfsFs fs = { 0 };
  struct fuse_session *se = NULL;
  gboolean nonempty, mounted = FALSE, pidfile_written = FALSE;
  gboolean handlers = FALSE;
  int reaper = -1;
  g_autoptr (GPtrArray) argv = build_fuse_args (cli, &nonempty);
  struct fuse_args args = FUSE_ARGS_INIT (argv->len - 1,
                                          (char **) argv->pdata);
  sigset_t sigs, old;
  int status = 1;

  fs.cli = cli;
  fs.uid = getuid ();
  fs.gid = getgid ();
  fs.root_mode = S_IFDIR | 0755;
  clock_gettime (CLOCK_REALTIME, &fs.root_time);
  fs.debug = cli->verbose;
  g_mutex_init (&fs.lock);
  g_mutex_init (&fs.inflight_lock);
  g_cond_init (&fs.inflight_cond);

  sigemptyset (&sigs);
  sigaddset (&sigs, SIGTERM);
  sigaddset (&sigs, SIGINT);
  sigaddset (&sigs, SIGHUP);
  pthread_sigmask (SIG_BLOCK, &sigs, &old);

  /* Options first: a typo should not cost a connection. No op runs
   * before the session loop, so fs may still be empty here. */
  se = fuse_session_new (&args, &nbdfs_ops, sizeof nbdfs_ops, &fs);
  if (se == NULL) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "FUSE refused the mount options (see the message above)");
    goto out;
  }
  if (!nbdfs_files_open (&fs, error))
    goto out;
  if (!nbdfs_worker_start (&fs, error))
    goto out;
  for (guint i = 0; i < fs.files->len; i++)
    nbdfs_allocation_refresh (&fs, g_ptr_array_index (fs.files, i));

  /* libfuse only takes over signals left at SIG_DFL; a shell starts
   * background jobs with SIGINT ignored, and "SIGINT stops nbdfs cleanly"
   * should hold there too. (SIGHUP stays as inherited, for nohup.) */
  signal (SIGINT, SIG_DFL);
  signal (SIGTERM, SIG_DFL);
  if (fuse_set_signal_handlers (se) != 0) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_FAILED,
                 "cannot install signal handlers");
    goto out;
  }
  handlers = TRUE;
  if (fuse_session_mount (se, mountpoint) != 0) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_FAILED,
                 "mounting on %s failed (see the message above)",
                 mountpoint);
    goto out;
  }
  mounted = TRUE;
  if (getuid () != 0)
    reaper = nbdfs_reaper_start (mountpoint);
  nbdfs_tune_readahead (mountpoint);
  if (cli->pidfile) {
    if (!write_pidfile (cli->pidfile, error))
      goto out;
    pidfile_written = TRUE;
  }

  report_ready (ready_fd, NULL);
  if (!cli->foreground) {
    /* Until now messages went to stderr, where the user waits for us. */
    nbdfs_log_setup (TRUE, cli->verbose);
    detach_stdio ();
    if (chdir ("/") != 0)
      g_debug ("chdir /: %s", g_strerror (errno));
  }
  g_message ("serving %u file(s) from %s on %s", fs.files->len,
             cli->nbd.addr.socket_path ? cli->nbd.addr.socket_path
             : cli->nbd.addr.host, mountpoint);

  pthread_sigmask (SIG_SETMASK, &old, NULL);
  int r = nbdfs_loop_run (se);
  g_debug ("session loop ended (%d)", r);
  pthread_sigmask (SIG_BLOCK, &sigs, NULL);
  status = 0;

out:
  if (mounted)
    fuse_session_unmount (se);
  nbdfs_reaper_disarm (reaper);
  /* A server on its way back gets a short grace, not the whole reconnect
   * window: shutdown must end in bounded time (requests parked for it
   * then fail with EIO; a write among them was never acknowledged). */
  for (guint i = 0; fs.files && i < fs.files->len; i++)
    nbdc_pool_limit_reconnect (((NbdfsFile *) g_ptr_array_index
                                (fs.files, i))->pool,
                               NBDFS_SHUTDOWN_RECONNECT_GRACE);
  /* Every reply the kernel is owed goes out (or fails harmlessly after the
   * unmount) before the session and the pools go away. Requests still
   * unanswered and the final flush get NBDFS_SHUTDOWN_WAIT seconds in
   * all: past that the pools give up on the server (EIO), so a silent
   * server cannot hold the exit for a whole request timeout. */
  gint64 deadline = g_get_monotonic_time ()
    + (gint64) NBDFS_SHUTDOWN_WAIT * G_USEC_PER_SEC;
  if (!nbdfs_req_drain_until (&fs, deadline)) {
    g_warning ("shutting down: requests unanswered after %u s; giving up on "
               "the server (they fail with EIO)", NBDFS_SHUTDOWN_WAIT);
    for (guint i = 0; fs.files && i < fs.files->len; i++)
      nbdc_pool_abort (((NbdfsFile *) g_ptr_array_index (fs.files, i))->pool,
                       "shutting down: the server did not answer in time");
  }
  nbdfs_req_drain (&fs);
  nbdfs_worker_stop (&fs);
  nbdfs_req_drain (&fs);
  if (nbdfs_files_close (&fs, deadline) != 0 && status == 0)
    status = 1;
  if (handlers)
    fuse_remove_signal_handlers (se);
  if (se)
    fuse_session_destroy (se);
  fuse_opt_free_args (&args);
  if (pidfile_written)
    unlink (cli->pidfile);
  g_mutex_clear (&fs.lock);
  g_mutex_clear (&fs.inflight_lock);
  g_cond_clear (&fs.inflight_cond);
  if (status == 0)
    g_message ("unmounted %s", mountpoint);
  return status;
}

int
nbdfs_fuse_run (NbdfsCli *cli, GError **error)
{
  gboolean nonempty;
  g_autoptr (GPtrArray) probe = build_fuse_args (cli, &nonempty);
  g_autofree char *mountpoint = check_mountpoint (cli->target, nonempty,
                                                  error);
  int ready_fd = -1;

  if (mountpoint == NULL)
    return -1;
  /* Every large request lives in a buffer of up to 1 MiB (max_write) that
   * is allocated on one thread and freed on the connection's reader. With
   * glibc's defaults those come and go as fresh mappings or trimmed heap,
   * and the benchmark showed 15-18% of the daemon's CPU in page faults and
   * page clearing at 1 MiB queue depth 16. Keep them in the heap and keep
   * up to 64 MiB of freed heap for reuse. */
  mallopt (M_MMAP_THRESHOLD, 4 << 20);
  mallopt (M_TRIM_THRESHOLD, 64 << 20);
  if (cli->pidfile && !g_path_is_absolute (cli->pidfile)) {
    /* The daemon runs in /: keep the path meaning what the user meant. */
    g_autofree char *cwd = g_get_current_dir ();
    char *abs = g_build_filename (cwd, cli->pidfile, NULL);
    g_free (cli->pidfile);
    cli->pidfile = abs;
  }

  if (!cli->foreground) {
    int p[2];
    if (pipe2 (p, O_CLOEXEC) != 0) {
      int e = errno;
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e),
                   "pipe: %s", g_strerror (e));
      return -1;
    }
    fflush (NULL);
    pid_t pid = fork ();
    if (pid < 0) {
      int e = errno;
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e),
                   "fork: %s", g_strerror (e));
      close (p[0]);
      close (p[1]);
      return -1;
    }
    if (pid > 0) {
      close (p[1]);
      return wait_for_child (pid, p[0], error);
    }
    close (p[0]);
    ready_fd = p[1];
    setsid ();
  }
  nbdfs_log_setup (FALSE, cli->verbose);

  g_autoptr (GError) err = NULL;
  int status = serve (cli, mountpoint, &ready_fd, &err);
  if (err) {
    if (ready_fd >= 0) {
      /* The parent prints it; we just go. */
      report_ready (&ready_fd, err);
      return 1;
    }
    if (cli->foreground) {
      g_propagate_error (error, g_steal_pointer (&err));
      return -1;
    }
    g_warning ("%s", err->message);
  }
  return status;
}
