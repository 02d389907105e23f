/* nbdfs — kernel mode: nbdfs --kernel ADDRESS [DEVICE].
 *
 * Check what can be checked before touching the network (root, nbd.ko,
 * device name, device free), negotiate N connections with the shared
 * negotiator (simple replies only), then give the sockets to the driver:
 *
 *  netlink (default): NBD_CMD_CONNECT. The kernel holds its own references
 *    to the sockets, so without --persist we exit as soon as it accepted
 *    them; the device lives until nbdfs --disconnect (or the server goes
 *    away, which fails I/O). With --persist we stay (as a daemon unless
 *    -f), listen for NBD_CMD_LINK_DEAD and reconnect (persist.c).
 *  ioctl (--ioctl, or no netlink): NBD_SET_* then NBD_DO_IT in a child
 *    process that must live as long as the device; the parent returns once
 *    the device is up.
 *
 * Over TLS the kernel gets one end of a socketpair per connection and a
 * relay thread (relay.c) moves the bytes to and from the TLS sessions, so
 * the process that runs it stays: the --persist daemon, the ioctl child,
 * or (netlink without --persist) a daemon that relays until the device's
 * connections end.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernelattach/attach.h"
#include "kernelattach/kernel.h"
#include "nbdclient/error.h"
#include "nbdclient/protocol.h"

#define MAX_CONNECTIONS 16
/* --persist without --timeout: a request sent on a connection that then
 * died is only retried once it times out (the driver's nbd_xmit_timeout
 * requeues it), so persist mode needs some timeout. */
#define PERSIST_DEFAULT_TIMEOUT 30
/* How long I/O waits for a reconnection before failing (--persist). */
#define PERSIST_DEAD_CONN_TIMEOUT 300

static void
close_fds (int *fds, unsigned n)
{
  for (unsigned i = 0; i < n; i++)
    if (fds[i] >= 0) {
      close (fds[i]);
      fds[i] = -1;
    }
}

static gboolean
write_pidfile (const char *path, pid_t pid, GError **error)
{
  g_autofree char *text = NULL;

  if (path == NULL)
    return TRUE;
  text = g_strdup_printf ("%d\n", (int) pid);
  if (!g_file_set_contents (path, text, -1, error)) {
    g_prefix_error (error, "--pidfile: ");
    return FALSE;
  }
  return TRUE;
}

/* The first device with no configuration (ioctl mode must name one). */
static int
find_free_device (GError **error)
{
  g_autoptr (GArray) list = nbdk_device_list ();

  for (guint i = 0; i < list->len; i++) {
    int index = g_array_index (list, int, i);
    if (!nbdk_device_attached (index))
      return index;
  }
  g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
               "no free /dev/nbdN device (nbdfs --status shows them; load "
               "nbd.ko with more: modprobe nbd nbds_max=N)");
  return -1;
}

/* Caps the request size at the server's maximum payload when it is below
 * the driver's default (the driver has no attribute for it). */
static void
limit_request_size (int index, const NbdExport *exp)
{
  g_autofree char *cur = nbdk_device_sysfs (index, "queue/max_sectors_kb");
  g_autofree char *path = NULL;
  g_autofree char *val = NULL;
  uint64_t cur_kb, want_kb;

  if (!exp->block_size_from_server || cur == NULL)
    return;
  cur_kb = g_ascii_strtoull (cur, NULL, 10);
  want_kb = exp->max_block / 1024;
  if (want_kb == 0 || want_kb >= cur_kb)
    return;
  if (want_kb * 1024 < (uint64_t) sysconf (_SC_PAGESIZE)) {
    g_warning ("the server's maximum request size (%u bytes) is below the "
               "page size; the kernel may send larger requests",
               exp->max_block);
    return;
  }
  path = g_strdup_printf ("/sys/block/nbd%d/queue/max_sectors_kb", index);
  val = g_strdup_printf ("%" G_GUINT64_FORMAT, want_kb);
  /* Not g_file_set_contents: sysfs needs a write in place, no rename. */
  int fd = open (path, O_WRONLY | O_CLOEXEC);
  gboolean ok = fd >= 0 && write (fd, val, strlen (val)) == (ssize_t) strlen (val);
  if (fd >= 0)
    close (fd);
  if (!ok)
    g_warning ("cannot limit /dev/nbd%d requests to %" G_GUINT64_FORMAT
               " KiB (the server's maximum)", index, want_kb);
}

/* A daemon's stdio goes to /dev/null and it leaves the session. */
static void
detach_stdio (void)
{
  int devnull;

  setsid ();
  if (chdir ("/") < 0)
    g_debug ("chdir /: %s", g_strerror (errno));
  devnull = open ("/dev/null", O_RDWR);
  if (devnull >= 0) {
    dup2 (devnull, STDIN_FILENO);
    dup2 (devnull, STDOUT_FILENO);
    dup2 (devnull, STDERR_FILENO);
    if (devnull > STDERR_FILENO)
      close (devnull);
  }
}

/* Detaches from the terminal for --persist without -f. The parent returns
 * (TRUE, *is_parent) once the child exists; the child carries on. */
static gboolean
daemonise (gboolean *is_parent, pid_t *child, GError **error)
{
  pid_t pid = fork ();

  if (pid < 0) {
    int err = errno;
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err),
                 "fork: %s", g_strerror (err));
    return FALSE;
  }
  if (pid > 0) {
    *is_parent = TRUE;
    *child = pid;
    return TRUE;
  }
  *is_parent = FALSE;
  detach_stdio ();
  return TRUE;
}

/* ---- netlink ---- */

static int
run_netlink (NbdfsCli *cli, NbdkNetlink *nl, NbdkAttach *a, int *fds,
             const NbdcOptions *opts, const NbdExport *exp, GError **error)
{
  int index;
  NbdkState st = { 0 };

  /* Join the multicast group before the device exists, so no LINK_DEAD
   * can slip by between attaching and listening. */
  if (cli->persist && !nbdk_nl_watch (nl, error))
    return -1;
  if (!nbdk_nl_connect (nl, a, &index, error))
    return -1;
  /* The kernel holds its own references now. */
  close_fds (fds, a->n_fds);
  limit_request_size (index, exp);

  printf ("/dev/nbd%d\n", index);
  fflush (stdout);
  st.backend = (char *) a->backend;
  st.connections = a->n_fds;
  st.persist = cli->persist;

  /* Over TLS this process is the relay (relay.c): it stays, --persist or
   * not, for as long as the device has connections. */
  gboolean relaying = nbdk_relay_active ();
  if (!cli->persist && !relaying) {
    nbdk_state_write (index, &st);
    return 0;
  }

  if (!cli->foreground) {
    gboolean parent;
    pid_t child;
    if (!daemonise (&parent, &child, error))
      return -1;
    if (parent) {
      st.daemon_pid = child;
      nbdk_state_write (index, &st);
      return write_pidfile (cli->pidfile, child, error) ? 0 : -1;
    }
  }
  else {
    st.daemon_pid = getpid ();
    nbdk_state_write (index, &st);
    if (!write_pidfile (cli->pidfile, getpid (), error))
      return -1;
  }

  if (!cli->persist) {
    /* TLS without --persist: relay until every connection has ended (the
     * device was disconnected, or the server went away). */
    nbdk_relay_start ();
    nbdk_relay_wait_idle ();
    nbdk_relay_stop ();
    g_debug ("/dev/nbd%d: no connection left to relay; exiting", index);
    if (!cli->foreground)
      _exit (0);
    return 0;
  }

  NbdkPersist p = { .index = index, .backend = (char *) a->backend,
                    .to_syslog = !cli->foreground };
  nbdc_options_copy (&p.opts, opts);
  nbdc_export_copy (&p.exp, exp);
  nbdk_relay_start ();    /* TLS: the relay thread, in the daemon */
  int r = nbdk_persist_run (nl, &p);
  if (relaying) {
    /* Stopped supervising (SIGTERM from nbdfs --disconnect, say): the
     * device still needs the relay until its connections end. A second
     * SIGTERM ends it at once. */
    signal (SIGTERM, SIG_DFL);
    signal (SIGINT, SIG_DFL);
    nbdk_relay_wait_idle ();
  }
  nbdk_relay_stop ();
  nbdc_options_clear (&p.opts);
  nbdc_export_clear (&p.exp);
  if (!cli->foreground)
    _exit (r == 0 ? 0 : 1);   /* the daemon: nothing else to print */
  return r;
}

/* ---- ioctl ---- */

static volatile sig_atomic_t stop_signal;

static void
on_stop_signal (int sig)
{
  stop_signal = sig;
}

/* In the NBD_DO_IT process: SIGINT/SIGTERM disconnect the device. */
static gpointer
stop_thread (gpointer data)
{
  int devfd = GPOINTER_TO_INT (data);
  sigset_t stop;
  int sig;

  sigemptyset (&stop);
  sigaddset (&stop, SIGINT);
  sigaddset (&stop, SIGTERM);
  sigaddset (&stop, SIGHUP);
  for (;;) {
    if (sigwait (&stop, &sig) != 0 || sig == SIGHUP)
      continue;
    g_debug ("signal %d: disconnecting", sig);
    nbdk_ioctl_request_disconnect (devfd);
  }
  return NULL;
}

static int
run_ioctl (NbdfsCli *cli, NbdkAttach *a, int *fds, GError **error)
{
  int devfd = nbdk_ioctl_setup (a, error);
  pid_t child;
  NbdkState st = { 0 };

  if (devfd < 0)
    return -1;
  child = fork ();
  if (child < 0) {
    int err = errno;
    close (devfd);
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err),
                 "fork: %s", g_strerror (err));
    return -1;
  }
  if (child == 0) {
    /* The process that owns the device: NBD_DO_IT returns only when the
     * device is disconnected. A signal that interrupted it would tear the
     * device down without telling the server (the driver's
     * wait_event_interruptible), so SIGINT/SIGTERM are blocked in every
     * thread and a helper thread turns them into NBD_DISCONNECT. */
    sigset_t stop;
    sigemptyset (&stop);
    sigaddset (&stop, SIGINT);
    sigaddset (&stop, SIGTERM);
    sigaddset (&stop, SIGHUP);
    pthread_sigmask (SIG_BLOCK, &stop, NULL);
    close_fds (fds, a->n_fds);
    if (!cli->foreground)
      detach_stdio ();
    g_thread_unref (g_thread_new ("stop", stop_thread,
                                  GINT_TO_POINTER (devfd)));
    nbdk_relay_start ();    /* TLS: this process relays too */
    int r = nbdk_ioctl_do_it (devfd);
    nbdk_relay_stop ();
    _exit (r == 0 ? 0 : 1);
  }
  close (devfd);
  close_fds (fds, a->n_fds);   /* the kernel holds references */

  /* Wait until the driver started the device (it creates "pid" then), or
   * the child failed. */
  gboolean up = FALSE;
  int status;
  for (int i = 0; i < 200 && !up; i++) {
    if (waitpid (child, &status, WNOHANG) == child) {
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                   "/dev/nbd%d: NBD_DO_IT failed at once (see dmesg)",
                   a->index);
      return -1;
    }
    up = nbdk_device_attached (a->index);
    if (!up)
      g_usleep (50 * 1000);
  }
  if (!up) {
    kill (child, SIGTERM);
    waitpid (child, &status, 0);
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                 "/dev/nbd%d did not start within 10 s", a->index);
    return -1;
  }

  printf ("/dev/nbd%d\n", a->index);
  fflush (stdout);
  st.backend = (char *) a->backend;
  st.connections = a->n_fds;
  st.daemon_pid = child;
  st.ioctl = TRUE;
  nbdk_state_write (a->index, &st);
  if (!write_pidfile (cli->pidfile, child, error))
    return -1;
  if (!cli->foreground)
    return 0;

  /* -f: stay until the device goes away; SIGINT/SIGTERM detach it (the
   * child does the NBD_DISCONNECT). */
  struct sigaction sa = { .sa_handler = on_stop_signal };
  sigemptyset (&sa.sa_mask);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  gboolean asked = FALSE;
  for (;;) {
    if (waitpid (child, &status, 0) == child)
      break;
    if (errno != EINTR)
      break;
    if (stop_signal && !asked) {
      asked = TRUE;
      kill (child, SIGTERM);
    }
  }
  nbdk_state_remove (a->index);
  return 0;
}

/* ---- the entry point ---- */

int
nbdfs_kernel_run (NbdfsCli *cli, GError **error)
{
  int index = -1;
  g_autoptr (GError) nl_error = NULL;
  NbdkNetlink *nl = NULL;
  gboolean use_ioctl = cli->use_ioctl;
  NbdcOptions opts = { 0 };
  NbdExport exp = { 0 };
  int fds[MAX_CONNECTIONS];
  unsigned n = 0, want;
  g_autofree char *backend = NULL;
  NbdkAttach a = { 0 };
  int r = -1;

  for (unsigned i = 0; i < MAX_CONNECTIONS; i++)
    fds[i] = -1;

  /* ---- what can be refused before any network traffic ---- */
  if (geteuid () != 0) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "kernel mode needs root (or use FUSE mode: "
                 "nbdfs ADDRESS MOUNTPOINT)");
    return -1;
  }
  if (cli->persist && use_ioctl) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "--persist needs the netlink interface (a dead connection "
                 "can only be replaced with NBD_CMD_RECONFIGURE): drop "
                 "--ioctl");
    return -1;
  }
  if (cli->pool.connections > MAX_CONNECTIONS) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "-C %u: at most %d connections", cli->pool.connections,
                 MAX_CONNECTIONS);
    return -1;
  }
  if (cli->target && !nbdk_device_parse (cli->target, &index, error))
    return -1;
  if (!nbdk_module_loaded ()) {
    nbdk_set_module_error (error);
    return -1;
  }
  if (!use_ioctl) {
    nl = nbdk_nl_open (&nl_error);
    if (nl == NULL) {
      if (cli->persist) {
        g_propagate_error (error, g_steal_pointer (&nl_error));
        return -1;
      }
      g_message ("netlink unavailable (%s): using the ioctl interface",
                 nl_error->message);
      use_ioctl = TRUE;
    }
  }
  if (use_ioctl && index < 0 && (index = find_free_device (error)) < 0)
    goto out;
  if (index >= 0) {
    if (use_ioctl && !nbdk_device_exists (index)) {
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                   "/dev/nbd%d does not exist (nbd.ko makes nbds_max devices; "
                   "reload it with more: modprobe -r nbd; modprobe nbd "
                   "nbds_max=N)", index);
      goto out;
    }
    if (nbdk_device_attached (index)) {
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                   "/dev/nbd%d is already attached (nbdfs --status /dev/nbd%d;"
                   " detach it with nbdfs --disconnect /dev/nbd%d)",
                   index, index, index);
      goto out;
    }
  }

  /* ---- negotiate ---- */
  nbdc_options_copy (&opts, &cli->nbd);
  opts.no_structured = TRUE;    /* the driver parses simple replies only */
  opts.no_meta = TRUE;
  fds[0] = nbdk_open_socket (&opts, &exp, error);
  if (fds[0] < 0)
    goto out;
  n = 1;
  want = cli->pool.connections;
  if (want == 0)
    want = exp.eflags & NBD_FLAG_CAN_MULTI_CONN ? 4 : 1;
  else if (want > 1 && !(exp.eflags & NBD_FLAG_CAN_MULTI_CONN)) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED,
                 "-C %u: the server does not allow more than one connection "
                 "to this export (no NBD_FLAG_CAN_MULTI_CONN); use -C 1",
                 want);
    goto out;
  }
  for (; n < want; n++) {
    NbdExport more = { 0 };
    fds[n] = nbdk_open_socket (&opts, &more, error);
    if (fds[n] < 0) {
      g_prefix_error (error, "connection %u of %u: ", n + 1, want);
      goto out;
    }
    gboolean same = nbdk_same_export (&exp, &more, error);
    nbdc_export_clear (&more);
    if (!same) {
      n++;
      goto out;
    }
  }

  /* ---- what the driver gets ---- */
  backend = nbdk_backend_id (&opts);
  a.index = index;
  a.size = exp.size;
  if (!nbdk_block_size (&exp, &a.block_size, error))
    goto out;
  if (exp.size % a.block_size != 0)
    g_warning ("the export's size (%" G_GUINT64_FORMAT " bytes) is not a "
               "multiple of the block size (%" G_GUINT64_FORMAT "): the last "
               "%" G_GUINT64_FORMAT " bytes are not reachable through the "
               "device", exp.size, a.block_size, exp.size % a.block_size);
  a.server_flags = exp.eflags;
  if (cli->pool.read_only)
    a.server_flags |= NBD_FLAG_READ_ONLY;
  /* No NBD_CFLAG_DESTROY_ON_DISCONNECT: /dev/nbdN is made by nbd.ko
   * (nbds_max) and other tools expect it to stay; destroying it on
   * disconnect would surprise them. No DISCONNECT_ON_CLOSE either: the
   * device outlives the processes that open it (mkfs, then mount...). */
  a.client_flags = 0;
  a.timeout = cli->pool.request_timeout;
  if (cli->persist) {
    if (a.timeout == 0)
      a.timeout = PERSIST_DEFAULT_TIMEOUT;
    a.dead_conn_timeout = MAX (PERSIST_DEAD_CONN_TIMEOUT, a.timeout);
  }
  a.backend = backend;
  a.fds = fds;
  a.n_fds = n;

  if (use_ioctl)
    r = run_ioctl (cli, &a, fds, error);
  else
    r = run_netlink (cli, nl, &a, fds, &opts, &exp, error);

 out:
  close_fds (fds, n);
  nbdk_nl_close (nl);
  nbdc_options_clear (&opts);
  nbdc_export_clear (&exp);
  return r;
}
