/* nbdfs — daemonising, the same way for every mode that stays running
 * (FUSE mode, kernel mode with --persist, a TLS relay or --ioctl).
 *
 * Background (the default): the parent forks and waits on a pipe; the
 * child starts the mode, then reports "ready" (the parent exits 0: the
 * mount or device is usable) or the error (the parent prints it and exits
 * 1). Only after "ready" does the child leave the terminal: until then its
 * messages go to stderr, where the user waits. The pidfile holds the PID
 * of the process that serves, and is written before "ready", so whoever
 * waited for us finds it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gio/gio.h>

#include "nbdfs.h"
#include "nbdclient/error.h"

void
nbdfs_pidfile_absolute (char **pidfile)
{
  if (*pidfile == NULL || g_path_is_absolute (*pidfile))
    return;
  g_autofree char *cwd = g_get_current_dir ();
  char *abs = g_build_filename (cwd, *pidfile, NULL);
  g_free (*pidfile);
  *pidfile = abs;
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

gboolean
nbdfs_daemon_begin (NbdfsDaemon *d, int *status, GError **error)
{
  int p[2];

  d->ready_fd = -1;
  d->pidfile_written = FALSE;
  if (d->foreground)
    return TRUE;
  if (pipe2 (p, O_CLOEXEC) != 0) {
    int e = errno;
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e),
                 "pipe: %s", g_strerror (e));
    *status = -1;
    return FALSE;
  }
  fflush (NULL);
  pid_t pid = fork ();
  if (pid < 0) {
    int e = errno;
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e),
                 "fork: %s", g_strerror (e));
    close (p[0]);
    close (p[1]);
    *status = -1;
    return FALSE;
  }
  if (pid > 0) {
    close (p[1]);
    *status = wait_for_child (pid, p[0], error);
    return FALSE;
  }
  close (p[0]);
  d->ready_fd = p[1];
  setsid ();
  return TRUE;
}

gboolean
nbdfs_daemon_ready (NbdfsDaemon *d, GError **error)
{
  if (d->pidfile) {
    if (!write_pidfile (d->pidfile, error))
      return FALSE;
    d->pidfile_written = TRUE;
  }
  fflush (stdout);
  report_ready (&d->ready_fd, NULL);
  if (!d->foreground) {
    /* Until now messages went to stderr, where the user waits for us. */
    nbdfs_log_setup (TRUE, d->verbose);
    detach_stdio ();
    if (chdir ("/") != 0)
      g_debug ("chdir /: %s", g_strerror (errno));
  }
  return TRUE;
}

int
nbdfs_daemon_end (NbdfsDaemon *d, int status, const GError *err,
                  GError **error)
{
  if (d->pidfile_written)
    unlink (d->pidfile);
  d->pidfile_written = FALSE;
  if (err == NULL)
    return status;
  if (d->ready_fd >= 0) {
    /* The parent prints it; we just go. */
    report_ready (&d->ready_fd, err);
    return 1;
  }
  if (d->foreground) {
    g_propagate_error (error, g_error_copy (err));
    return -1;
  }
  g_warning ("%s", err->message);
  return status ? status : 1;
}
