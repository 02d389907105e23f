/* notify-listen — plays systemd's side of sd_notify(3) for tests.
 *
 *   notify-listen SOCKET-PATH LOG [ON-READY-COMMAND]
 *
 * Binds an AF_UNIX datagram socket at SOCKET-PATH and appends every
 * message to LOG, one line each ("MS TEXT", milliseconds since start,
 * newlines inside the message written as '|'). A descriptor passed with
 * a message (BARRIER=1) is closed, as systemd does. When a message holds
 * READY=1, ON-READY-COMMAND runs (sh -c) before the next message is read
 * and a line "ready-check rc=N" follows: the test asserts that what
 * READY=1 promises (the mount works, the device is there) already holds.
 * Runs until SIGTERM/SIGINT. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long
now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

int
main (int argc, char **argv)
{
  if (argc < 3) {
    fprintf (stderr, "usage: notify-listen SOCKET LOG [ON-READY-COMMAND]\n");
    return 2;
  }
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  if (strlen (argv[1]) >= sizeof sa.sun_path) {
    fprintf (stderr, "notify-listen: path too long\n");
    return 2;
  }
  strcpy (sa.sun_path, argv[1]);
  int s = socket (AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  unlink (argv[1]);
  if (s < 0 || bind (s, (struct sockaddr *) &sa, sizeof sa) != 0) {
    perror ("notify-listen: bind");
    return 1;
  }
  FILE *log = fopen (argv[2], "a");
  if (log == NULL) {
    perror ("notify-listen: log");
    return 1;
  }
  long long t0 = now_ms ();
  for (;;) {
    char buf[4097];
    union {
      struct cmsghdr align;
      char b[CMSG_SPACE (sizeof (int) * 8)];
    } control;
    struct iovec iov = { .iov_base = buf, .iov_len = sizeof buf - 1 };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                          .msg_control = control.b,
                          .msg_controllen = sizeof control.b };
    ssize_t n = recvmsg (s, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      perror ("notify-listen: recvmsg");
      return 1;
    }
    buf[n] = '\0';
    for (struct cmsghdr *c = CMSG_FIRSTHDR (&msg); c;
         c = CMSG_NXTHDR (&msg, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        int nfd = (c->cmsg_len - CMSG_LEN (0)) / sizeof (int);
        for (int i = 0; i < nfd; i++) {
          int fd;
          memcpy (&fd, CMSG_DATA (c) + i * sizeof (int), sizeof fd);
          close (fd);
        }
      }
    int ready = strstr (buf, "READY=1") != NULL;
    for (char *p = buf; *p; p++)
      if (*p == '\n')
        *p = '|';
    fprintf (log, "%lld %s\n", now_ms () - t0, buf);
    fflush (log);
    if (ready && argc > 3) {
      int rc = system (argv[3]);
      fprintf (log, "%lld ready-check rc=%d\n", now_ms () - t0,
               WIFEXITED (rc) ? WEXITSTATUS (rc) : 128);
      fflush (log);
    }
  }
}
