/* Unit tests: system/notify.c (sd_notify protocol) against a datagram
 * socket of our own, as systemd would listen. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "system/notify.h"

/* Binds a datagram socket at path (or abstract if path starts with '@'). */
static int
listen_at (const char *path)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  size_t len = strlen (path);
  g_assert_cmpuint (len, <, sizeof sa.sun_path);
  memcpy (sa.sun_path, path, len);
  if (path[0] == '@')
    sa.sun_path[0] = '\0';
  int s = socket (AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint (s, >=, 0);
  socklen_t salen = G_STRUCT_OFFSET (struct sockaddr_un, sun_path) + len
    + (path[0] == '@' ? 0 : 1);
  g_assert_cmpint (bind (s, (struct sockaddr *) &sa, salen), ==, 0);
  return s;
}

/* Receives one datagram; *fd gets a passed descriptor or -1. */
static char *
receive (int s, int *fd)
{
  char buf[4096];
  union {
    struct cmsghdr align;
    char b[CMSG_SPACE (sizeof (int))];
  } control;
  struct iovec iov = { .iov_base = buf, .iov_len = sizeof buf - 1 };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = control.b,
                        .msg_controllen = sizeof control.b };
  struct pollfd p = { .fd = s, .events = POLLIN };
  g_assert_cmpint (poll (&p, 1, 2000), ==, 1);
  ssize_t n = recvmsg (s, &msg, MSG_CMSG_CLOEXEC);
  g_assert_cmpint (n, >=, 0);
  buf[n] = '\0';
  if (fd) {
    struct cmsghdr *c = CMSG_FIRSTHDR (&msg);
    *fd = -1;
    if (c && c->cmsg_type == SCM_RIGHTS)
      memcpy (fd, CMSG_DATA (c), sizeof *fd);
  }
  return g_strdup (buf);
}

static void
test_unset (void)
{
  g_autoptr (GError) error = NULL;
  g_unsetenv ("NOTIFY_SOCKET");
  g_assert_false (nbdfs_notify_wanted ());
  g_assert_true (nbdfs_notify ("READY=1", &error));
  g_assert_true (nbdfs_notify_barrier (10, &error));
  g_assert_no_error (error);
}

static void
test_path (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("notify-XXXXXX", NULL);
  g_autofree char *path = g_build_filename (dir, "notify", NULL);
  int s = listen_at (path);

  g_setenv ("NOTIFY_SOCKET", path, TRUE);
  g_assert_true (nbdfs_notify_wanted ());
  g_assert_true (nbdfs_notify ("READY=1\nSTATUS=connected", &error));
  g_assert_no_error (error);
  g_autofree char *m1 = receive (s, NULL);
  g_assert_cmpstr (m1, ==, "READY=1\nSTATUS=connected");
  g_assert_true (nbdfs_notifyf (&error, "STATUS=%s %d", "reconnecting", 2));
  g_autofree char *m2 = receive (s, NULL);
  g_assert_cmpstr (m2, ==, "STATUS=reconnecting 2");

  /* Nobody listening: an error, not a crash or a hang. */
  close (s);
  g_unlink (path);
  g_assert_false (nbdfs_notify ("STOPPING=1", &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  g_rmdir (dir);
  g_unsetenv ("NOTIFY_SOCKET");
}

static void
test_abstract (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *name = g_strdup_printf ("@nbdfs-test-notify-%d",
                                           (int) getpid ());
  int s = listen_at (name);
  g_setenv ("NOTIFY_SOCKET", name, TRUE);
  g_assert_true (nbdfs_notify ("STOPPING=1", &error));
  g_autofree char *m = receive (s, NULL);
  g_assert_cmpstr (m, ==, "STOPPING=1");
  close (s);
  g_setenv ("NOTIFY_SOCKET", "vsock:2:1234", TRUE);
  g_assert_false (nbdfs_notify ("READY=1", &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
  g_unsetenv ("NOTIFY_SOCKET");
}

typedef struct {
  int s;
  gboolean close_fd;
} Manager;

/* Plays systemd's side of BARRIER=1: closes the fd it gets (or not). */
static gpointer
manager (gpointer data)
{
  Manager *m = data;
  int fd;
  char *msg = receive (m->s, &fd);
  g_assert_cmpstr (msg, ==, "BARRIER=1");
  g_assert_cmpint (fd, >=, 0);
  g_free (msg);
  if (m->close_fd)
    close (fd);
  else
    g_usleep (300000), close (fd);
  return NULL;
}

static void
test_barrier (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *name = g_strdup_printf ("@nbdfs-test-barrier-%d",
                                           (int) getpid ());
  Manager m = { .s = listen_at (name), .close_fd = TRUE };
  g_setenv ("NOTIFY_SOCKET", name, TRUE);

  GThread *t = g_thread_new ("manager", manager, &m);
  g_assert_true (nbdfs_notify_barrier (2000, &error));
  g_assert_no_error (error);
  g_thread_join (t);

  /* A manager that holds the fd past the timeout. */
  m.close_fd = FALSE;
  t = g_thread_new ("manager", manager, &m);
  g_assert_false (nbdfs_notify_barrier (50, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT);
  g_thread_join (t);
  close (m.s);
  g_unsetenv ("NOTIFY_SOCKET");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/system/notify/unset", test_unset);
  g_test_add_func ("/system/notify/path", test_path);
  g_test_add_func ("/system/notify/abstract", test_abstract);
  g_test_add_func ("/system/notify/barrier", test_barrier);
  return g_test_run ();
}
