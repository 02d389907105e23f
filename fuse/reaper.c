/* nbdfs — unmount after kill -9 when we are not root.
 *
 * We mount with auto_unmount: fusermount3 stays behind and unmounts when
 * our end of its socket closes. But before unmounting it open()s the
 * mount point as root to see ENOTCONN, and a FUSE mount without
 * allow_other refuses root with EACCES, so for an ordinary user the dead
 * mount stays (seen with fuse3 3.14). The reaper closes that gap: a small
 * child that waits on a pipe from us. A byte means "clean exit, nothing
 * to do"; end-of-file without one means we died, and it runs
 * "fusermount3 -u -z -q MOUNTPOINT" as the user who mounted.
 *
 * It is forked while other threads run, so the child only calls
 * async-signal-safe functions before exec; everything it needs is
 * prepared first.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <sys/syscall.h>

#include "fuse/fs.h"

int
nbdfs_reaper_start (const char *mountpoint)
{
  g_autofree char *prog = g_find_program_in_path ("fusermount3");
  int p[2];

  if (prog == NULL) {
    g_debug ("reaper: no fusermount3 in PATH");
    return -1;
  }
  char *argv[] = { prog, (char *) "-u", (char *) "-z", (char *) "-q",
                   (char *) "--", (char *) mountpoint, NULL };
  if (pipe2 (p, O_CLOEXEC) != 0)
    return -1;
  pid_t pid = fork ();
  if (pid < 0) {
    close (p[0]);
    close (p[1]);
    return -1;
  }
  if (pid == 0) {
    /* The child: async-signal-safe calls only. */
    struct sigaction sa = { .sa_handler = SIG_IGN };
    sigaction (SIGINT, &sa, NULL);
    sigaction (SIGTERM, &sa, NULL);
    sigaction (SIGHUP, &sa, NULL);
    sigset_t none;
    sigemptyset (&none);
    sigprocmask (SIG_SETMASK, &none, NULL);
    /* Keep only the pipe (as fd 0): not /dev/fuse, not the sockets. */
    dup2 (p[0], 0);
    syscall (SYS_close_range, 3, ~0U, 0);
    char c;
    ssize_t n;
    while ((n = read (0, &c, 1)) < 0 && errno == EINTR)
      ;
    if (n == 1)
      _exit (0);              /* clean exit: nothing to do */
    int null = open ("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2 (null, 0);
      dup2 (null, 1);
      dup2 (null, 2);
    }
    execv (argv[0], argv);
    _exit (127);
  }
  close (p[0]);
  g_debug ("reaper: process %ld unmounts %s if we die", (long) pid,
           mountpoint);
  return p[1];
}

void
nbdfs_reaper_disarm (int fd)
{
  if (fd < 0)
    return;
  ssize_t n;
  while ((n = write (fd, "x", 1)) < 0 && errno == EINTR)
    ;
  close (fd);
}
