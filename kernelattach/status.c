/* nbdfs — kernel mode: what nbdfs --status [DEVICE] shows (the program
 * layer prints it) and nbdfs --disconnect DEVICE.
 *
 * Which devices are attached comes from the driver (NBD_CMD_STATUS, or
 * /sys/block/nbd* without netlink) and /sys/block/nbdN/pid (present while
 * a device runs; NBD_CMD_STATUS alone also counts devices that are merely
 * held open); size, pid and backend from sysfs; the number of connections
 * and the supervising process from nbdfs's own state file, since the
 * kernel does not tell.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "kernelattach/kernel.h"
#include "nbdclient/error.h"

static void
dev_info_clear (NbdkDeviceInfo *d)
{
  g_free (d->backend);
}

static void
fill (NbdkDeviceInfo *d, int index, gboolean connected)
{
  NbdkState st;

  memset (d, 0, sizeof *d);
  d->index = index;
  d->attached = connected && nbdk_device_attached (index);
  if (!d->attached)
    return;
  g_autofree char *sectors = nbdk_device_sysfs (index, "size");
  g_autofree char *pid = nbdk_device_sysfs (index, "pid");
  d->size = sectors ? g_ascii_strtoull (sectors, NULL, 10) * 512 : 0;
  d->pid = pid ? (long) g_ascii_strtoll (pid, NULL, 10) : 0;
  d->backend = nbdk_device_sysfs (index, "backend");
  if (d->backend && *d->backend == '\0')
    g_clear_pointer (&d->backend, g_free);
  d->have_state = nbdk_state_read (index, &st);
  if (!d->have_state)
    return;
  if (d->backend == NULL && st.backend && *st.backend)
    d->backend = g_strdup (st.backend);
  d->connections = st.connections;
  d->daemon_pid = st.daemon_pid;
  d->ioctl = st.ioctl;
  d->persist = st.persist;
  nbdk_state_clear (&st);
}

/* Devices to report: from the driver if netlink works, else sysfs. */
static GArray *
collect (int only, GError **error)
{
  GArray *out = g_array_new (FALSE, TRUE, sizeof (NbdkDeviceInfo));
  g_autoptr (GError) nl_error = NULL;
  NbdkNetlink *nl = nbdk_nl_open (&nl_error);
  GArray *st = NULL;

  g_array_set_clear_func (out, (GDestroyNotify) dev_info_clear);
  if (nl) {
    st = nbdk_nl_status (nl, only, &nl_error);
    nbdk_nl_close (nl);
  }
  if (st) {
    for (guint i = 0; i < st->len; i++) {
      NbdkDeviceStatus *s = &g_array_index (st, NbdkDeviceStatus, i);
      NbdkDeviceInfo d;
      fill (&d, s->index, s->connected);
      g_array_append_val (out, d);
    }
    g_array_unref (st);
  }
  else {
    g_debug ("NBD_CMD_STATUS unavailable (%s): reading /sys/block",
             nl_error ? nl_error->message : "?");
    g_autoptr (GArray) list = nbdk_device_list ();
    for (guint i = 0; i < list->len; i++) {
      int index = g_array_index (list, int, i);
      if (only >= 0 && index != only)
        continue;
      NbdkDeviceInfo d;
      fill (&d, index, TRUE);
      g_array_append_val (out, d);
    }
  }
  return out;
}

GArray *
nbdk_status (const char *device, int *only, GError **error)
{
  *only = -1;
  if (device && !nbdk_device_parse (device, only, error))
    return NULL;
  if (!nbdk_module_loaded ()) {
    nbdk_set_module_error (error);
    return NULL;
  }
  GArray *devs = collect (*only, error);
  if (*only >= 0 && devs->len == 0) {
    NbdkDeviceInfo d = { .index = *only };
    g_array_append_val (devs, d);
  }
  return devs;
}

/* ---- --disconnect ---- */

typedef struct {
  GMutex lock;
  GCond cond;
  gboolean done;
  int fd;
  gint refs;      /* the waiter and the thread; the last one frees */
} SyncJob;

static void
sync_job_unref (SyncJob *job)
{
  if (!g_atomic_int_dec_and_test (&job->refs))
    return;
  close (job->fd);
  g_mutex_clear (&job->lock);
  g_cond_clear (&job->cond);
  g_free (job);
}

static gpointer
sync_thread (gpointer data)
{
  SyncJob *job = data;

  /* Writes the block device's dirty pages and sends a flush. */
  if (fsync (job->fd) < 0)
    g_debug ("fsync before disconnect: %s", g_strerror (errno));
  g_mutex_lock (&job->lock);
  job->done = TRUE;
  g_cond_signal (&job->cond);
  g_mutex_unlock (&job->lock);
  sync_job_unref (job);
  return NULL;
}

/* Before cutting the connections, write what is still cached, but do not
 * wait forever on a device whose server is gone: after 10 s we disconnect
 * anyway (which fails the stuck I/O and frees the thread). */
static void
sync_device (int index)
{
  g_autofree char *path = g_strdup_printf ("/dev/nbd%d", index);
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  SyncJob *job;
  gint64 deadline = g_get_monotonic_time () + 10 * G_TIME_SPAN_SECOND;

  if (fd < 0)
    return;
  job = g_new0 (SyncJob, 1);
  g_mutex_init (&job->lock);
  g_cond_init (&job->cond);
  job->fd = fd;
  job->refs = 2;
  g_thread_unref (g_thread_new ("sync", sync_thread, job));
  g_mutex_lock (&job->lock);
  while (!job->done)
    if (!g_cond_wait_until (&job->cond, &job->lock, deadline)) {
      g_warning ("/dev/nbd%d: flushing before the disconnect takes too "
                 "long; disconnecting anyway", index);
      break;
    }
  g_mutex_unlock (&job->lock);
  sync_job_unref (job);
}

static void
wait_gone (pid_t pid, int tenths)
{
  for (int i = 0; i < tenths && kill (pid, 0) == 0; i++)
    g_usleep (100 * 1000);
}

gboolean
nbdk_disconnect (const char *device, GError **error)
{
  int index;
  NbdkState st;
  gboolean have_state;
  g_autoptr (GError) nl_error = NULL;
  NbdkNetlink *nl;
  gboolean ok;

  if (!nbdk_device_parse (device, &index, error))
    return FALSE;
  if (geteuid () != 0) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "detaching a device needs root");
    return FALSE;
  }
  if (!nbdk_module_loaded ()) {
    nbdk_set_module_error (error);
    return FALSE;
  }
  if (!nbdk_device_attached (index)) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                 "/dev/nbd%d is not attached", index);
    return FALSE;
  }
  have_state = nbdk_state_read (index, &st);
  /* Over TLS the daemon is also the relay (relay.c): it must live until
   * the flush and the disconnect have gone through it, then it exits. */
  gboolean relayed = have_state && st.backend
    && g_str_has_prefix (st.backend, "nbds");
  /* A --persist supervisor must not put a connection back (a relaying
   * one stops reconnecting on SIGTERM but keeps relaying). */
  if (have_state && st.persist && st.daemon_pid > 0) {
    kill (st.daemon_pid, SIGTERM);
    if (!relayed)
      wait_gone (st.daemon_pid, 50);
  }
  sync_device (index);

  nl = nbdk_nl_open (&nl_error);
  if (nl) {
    ok = nbdk_nl_disconnect (nl, index, error);
    nbdk_nl_close (nl);
  }
  else {
    g_debug ("netlink unavailable (%s): NBD_DISCONNECT ioctl",
             nl_error->message);
    ok = nbdk_ioctl_disconnect (index, error);
  }
  /* An ioctl-mode device is gone once its NBD_DO_IT process is. */
  if (ok && have_state && (st.ioctl || relayed) && st.daemon_pid > 0)
    wait_gone (st.daemon_pid, 100);
  if (ok)
    nbdk_state_remove (index);
  if (have_state)
    nbdk_state_clear (&st);
  return ok;
}
