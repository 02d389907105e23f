/* nbdfs — kernel mode: nbdfs --kernel ADDRESS [DEVICE].
 *
 * nbdk_start checks what can be checked before touching the network
 * (root, nbd.ko, device name, device free) and negotiates N connections
 * with the shared negotiator (simple replies only). nbdk_serve then gives
 * the sockets to the driver, in the process the program layer chose (it
 * daemonises first when nbdk_must_stay says a process must stay):
 *
 *  netlink (default): NBD_CMD_CONNECT. The kernel holds its own references
 *    to the sockets, so without --persist we return as soon as it accepted
 *    them; the device lives until nbdfs --disconnect (or the server goes
 *    away, which fails I/O). With --persist we stay, listen for
 *    NBD_CMD_LINK_DEAD and reconnect (persist.c).
 *  ioctl (--ioctl, or no netlink): NBD_SET_* then NBD_DO_IT, which blocks
 *    (in a thread of ours) for as long as the device lives; SIGINT/SIGTERM
 *    turn into NBD_DISCONNECT.
 *
 * Over TLS the kernel gets one end of a socketpair per connection and a
 * relay thread (relay.c) moves the bytes to and from the TLS sessions, so
 * the process that runs it stays: the --persist supervisor, the NBD_DO_IT
 * holder, or (netlink without --persist) a process that relays until the
 * device's connections end.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

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
/* How long NBD_DO_IT may take to bring the device up. */
#define IOCTL_START_TIMEOUT_MS 10000

struct NbdkRun {
  const NbdkOptions *o;
  NbdcOptions opts;           /* o->nbd, kernel flavour */
  NbdExport exp;              /* what the first connection said */
  NbdkNetlink *nl;            /* NULL: the ioctl interface */
  gboolean relaying;          /* TLS: the kernel's sockets are relayed */
  int fds[MAX_CONNECTIONS];
  unsigned n_fds;
  char *backend;
  NbdkAttach a;
};

static void
close_fds (int *fds, unsigned n)
{
  for (unsigned i = 0; i < n; i++)
    if (fds[i] >= 0) {
      close (fds[i]);
      fds[i] = -1;
    }
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


/* What --status shows, written once the device is up. */
static void
record_state (NbdkRun *run, int index, gboolean stay)
{
  NbdkState st = { 0 };

  st.backend = run->backend;
  st.connections = run->a.n_fds;
  st.persist = run->o->persist;
  st.ioctl = run->nl == NULL;
  st.daemon_pid = stay ? getpid () : 0;
  nbdk_state_write (index, &st);
}

/* ---- netlink ---- */

static int
serve_netlink (NbdkRun *run, NbdkReadyFn ready, void *data, GError **error)
{
  const NbdkOptions *o = run->o;
  gboolean stay = nbdk_must_stay (run);
  int index;

  /* Join the multicast group before the device exists, so no LINK_DEAD
   * can slip by between attaching and listening. */
  if (o->persist && !nbdk_nl_watch (run->nl, error))
    return -1;
  if (!nbdk_nl_connect (run->nl, &run->a, &index, error))
    return -1;
  /* The kernel holds its own references now. */
  close_fds (run->fds, run->n_fds);
  limit_request_size (index, &run->exp);
  record_state (run, index, stay);
  if (!ready (index, data, error)) {
    nbdk_nl_disconnect (run->nl, index, NULL);
    nbdk_state_remove (index);
    return -1;
  }
  if (!stay)
    return 0;

  if (!o->persist) {
    /* TLS without --persist: relay until every connection has ended (the
     * device was disconnected, or the server went away). */
    nbdk_relay_start ();
    nbdk_relay_wait_idle ();
    nbdk_relay_stop ();
    g_debug ("/dev/nbd%d: no connection left to relay; exiting", index);
    return 0;
  }

  NbdkPersist p = { .index = index, .backend = run->backend };
  nbdc_options_copy (&p.opts, &run->opts);
  nbdc_export_copy (&p.exp, &run->exp);
  nbdk_relay_start ();    /* TLS: the relay thread, in this process */
  int r = nbdk_persist_run (run->nl, &p);
  if (run->relaying) {
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
  return r;
}

/* ---- ioctl ---- */

/* The NBD_DO_IT process: NBD_DO_IT blocks the main thread for as long as
 * the device lives (the driver records that thread as the device's pid,
 * which --status matches against the state file's pid, so it must be the
 * process ID); a watcher thread sees the device come up, reports it, and
 * turns SIGINT/SIGTERM into NBD_DISCONNECT. */
typedef struct {
  NbdkRun *run;
  int devfd;
  NbdkReadyFn ready;
  void *data;
  sigset_t stop;
  gint done;                  /* atomic: NBD_DO_IT returned */
  /* Written by the watcher, read after it was joined: */
  gboolean up;
  gboolean failed;
  GError *error;
} DoIt;

static gpointer
watch_thread (gpointer data)
{
  DoIt *d = data;
  int index = d->run->a.index;

  /* The driver creates /sys/block/nbdN/pid once NBD_DO_IT runs. */
  for (int ms = 0; ms < IOCTL_START_TIMEOUT_MS && !d->up; ms += 50) {
    if (g_atomic_int_get (&d->done))
      break;
    d->up = nbdk_device_attached (index);
    if (!d->up)
      g_usleep (50 * 1000);
  }
  if (!d->up) {
    d->failed = TRUE;
    if (g_atomic_int_get (&d->done))
      g_set_error (&d->error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                   "/dev/nbd%d: NBD_DO_IT failed at once (see dmesg)", index);
    else
      g_set_error (&d->error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                   "/dev/nbd%d did not start within %d s", index,
                   IOCTL_START_TIMEOUT_MS / 1000);
  }
  else {
    record_state (d->run, index, TRUE);
    d->failed = !d->ready (index, d->data, &d->error);
  }
  if (d->failed && !g_atomic_int_get (&d->done))
    nbdk_ioctl_request_disconnect (d->devfd);

  /* Until the device is disconnected (here on a signal, or by nbdfs
   * --disconnect). */
  while (!g_atomic_int_get (&d->done)) {
    struct timespec tick = { 0, 100 * 1000 * 1000 };
    int sig = sigtimedwait (&d->stop, NULL, &tick);
    if (sig == SIGINT || sig == SIGTERM) {
      g_debug ("signal %d: disconnecting", sig);
      nbdk_ioctl_request_disconnect (d->devfd);
    }
  }
  return NULL;
}

static int
serve_ioctl (NbdkRun *run, NbdkReadyFn ready, void *data, GError **error)
{
  int index = run->a.index;
  DoIt d = { .run = run, .ready = ready, .data = data,
             .devfd = nbdk_ioctl_setup (&run->a, error) };

  if (d.devfd < 0)
    return -1;
  close_fds (run->fds, run->n_fds);   /* the kernel holds references */

  /* A signal that interrupted NBD_DO_IT would tear the device down
   * without telling the server (the driver's wait_event_interruptible), so
   * SIGINT/SIGTERM/SIGHUP are blocked in every thread (the threads made
   * below inherit the mask) and the watcher takes them with sigtimedwait. */
  sigemptyset (&d.stop);
  sigaddset (&d.stop, SIGINT);
  sigaddset (&d.stop, SIGTERM);
  sigaddset (&d.stop, SIGHUP);
  pthread_sigmask (SIG_BLOCK, &d.stop, NULL);
  nbdk_relay_start ();    /* TLS: this process relays too */
  GThread *watcher = g_thread_new ("nbd-watch", watch_thread, &d);
  int r = nbdk_ioctl_do_it (d.devfd);
  g_atomic_int_set (&d.done, 1);
  g_thread_join (watcher);
  nbdk_relay_stop ();
  close (d.devfd);
  if (d.up)
    nbdk_state_remove (index);
  if (d.failed) {
    g_propagate_error (error, d.error);
    return -1;
  }
  if (r != 0)
    g_warning ("/dev/nbd%d: NBD_DO_IT: %s", index, g_strerror (r));
  return 0;
}

/* ---- the entry points ---- */

NbdkRun *
nbdk_start (const NbdkOptions *o, GError **error)
{
  int index = -1;
  g_autoptr (GError) nl_error = NULL;
  gboolean use_ioctl = o->use_ioctl;
  unsigned want;
  NbdkRun *run = g_new0 (NbdkRun, 1);

  run->o = o;
  for (unsigned i = 0; i < MAX_CONNECTIONS; i++)
    run->fds[i] = -1;

  /* ---- what can be refused before any network traffic ---- */
  if (geteuid () != 0) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "kernel mode needs root (or use FUSE mode: "
                 "nbdfs ADDRESS MOUNTPOINT)");
    goto fail;
  }
  if (o->persist && use_ioctl) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "--persist needs the netlink interface (a dead connection "
                 "can only be replaced with NBD_CMD_RECONFIGURE): drop "
                 "--ioctl");
    goto fail;
  }
  if (o->pool->connections > MAX_CONNECTIONS) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "-C %u: at most %d connections", o->pool->connections,
                 MAX_CONNECTIONS);
    goto fail;
  }
  if (o->device && !nbdk_device_parse (o->device, &index, error))
    goto fail;
  if (!nbdk_module_loaded ()) {
    nbdk_set_module_error (error);
    goto fail;
  }
  if (!use_ioctl) {
    run->nl = nbdk_nl_open (&nl_error);
    if (run->nl == NULL) {
      if (o->persist) {
        g_propagate_error (error, g_steal_pointer (&nl_error));
        goto fail;
      }
      g_message ("netlink unavailable (%s): using the ioctl interface",
                 nl_error->message);
      use_ioctl = TRUE;
    }
  }
  if (use_ioctl && index < 0 && (index = find_free_device (error)) < 0)
    goto fail;
  if (index >= 0) {
    if (use_ioctl && !nbdk_device_exists (index)) {
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                   "/dev/nbd%d does not exist (nbd.ko makes nbds_max devices; "
                   "reload it with more: modprobe -r nbd; modprobe nbd "
                   "nbds_max=N)", index);
      goto fail;
    }
    if (nbdk_device_attached (index)) {
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                   "/dev/nbd%d is already attached (nbdfs --status /dev/nbd%d;"
                   " detach it with nbdfs --disconnect /dev/nbd%d)",
                   index, index, index);
      goto fail;
    }
  }

  /* ---- negotiate ---- */
  nbdc_options_copy (&run->opts, o->nbd);
  run->opts.no_structured = TRUE;  /* the driver parses simple replies only */
  run->opts.no_meta = TRUE;
  run->fds[0] = nbdk_open_socket (&run->opts, &run->exp, error);
  if (run->fds[0] < 0)
    goto fail;
  run->n_fds = 1;
  want = o->pool->connections;
  if (want == 0)
    want = run->exp.eflags & NBD_FLAG_CAN_MULTI_CONN ? 4 : 1;
  else if (want > 1 && !(run->exp.eflags & NBD_FLAG_CAN_MULTI_CONN)) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED,
                 "-C %u: the server does not allow more than one connection "
                 "to this export (no NBD_FLAG_CAN_MULTI_CONN); use -C 1",
                 want);
    goto fail;
  }
  for (; run->n_fds < want; run->n_fds++) {
    NbdExport more = { 0 };
    unsigned n = run->n_fds;
    run->fds[n] = nbdk_open_socket (&run->opts, &more, error);
    if (run->fds[n] < 0) {
      g_prefix_error (error, "connection %u of %u: ", n + 1, want);
      goto fail;
    }
    gboolean same = nbdk_same_export (&run->exp, &more, error);
    nbdc_export_clear (&more);
    if (!same) {
      run->n_fds++;
      goto fail;
    }
  }
  run->relaying = nbdk_relay_active ();

  /* ---- what the driver gets ---- */
  NbdkAttach *a = &run->a;
  run->backend = nbdk_backend_id (&run->opts);
  a->index = index;
  a->size = run->exp.size;
  if (!nbdk_block_size (&run->exp, &a->block_size, error))
    goto fail;
  if (run->exp.size % a->block_size != 0)
    g_warning ("the export's size (%" G_GUINT64_FORMAT " bytes) is not a "
               "multiple of the block size (%" G_GUINT64_FORMAT "): the last "
               "%" G_GUINT64_FORMAT " bytes are not reachable through the "
               "device", run->exp.size, a->block_size,
               run->exp.size % a->block_size);
  a->server_flags = run->exp.eflags;
  if (o->pool->read_only)
    a->server_flags |= NBD_FLAG_READ_ONLY;
  /* No NBD_CFLAG_DESTROY_ON_DISCONNECT: /dev/nbdN is made by nbd.ko
   * (nbds_max) and other tools expect it to stay; destroying it on
   * disconnect would surprise them. No DISCONNECT_ON_CLOSE either: the
   * device outlives the processes that open it (mkfs, then mount...). */
  a->client_flags = 0;
  a->timeout = o->pool->request_timeout;
  if (o->persist) {
    if (a->timeout == 0)
      a->timeout = PERSIST_DEFAULT_TIMEOUT;
    a->dead_conn_timeout = MAX (PERSIST_DEAD_CONN_TIMEOUT, a->timeout);
  }
  a->backend = run->backend;
  a->fds = run->fds;
  a->n_fds = run->n_fds;
  return run;

fail:
  nbdk_free (run);
  return NULL;
}

gboolean
nbdk_must_stay (NbdkRun *run)
{
  return run->o->persist || run->nl == NULL || run->relaying;
}

int
nbdk_serve (NbdkRun *run, NbdkReadyFn ready, void *data, GError **error)
{
  if (run->nl == NULL)
    return serve_ioctl (run, ready, data, error);
  return serve_netlink (run, ready, data, error);
}

void
nbdk_free (NbdkRun *run)
{
  if (run == NULL)
    return;
  close_fds (run->fds, run->n_fds);
  nbdk_nl_close (run->nl);
  nbdc_options_clear (&run->opts);
  nbdc_export_clear (&run->exp);
  g_free (run->backend);
  g_free (run);
}
