/* nbdfs — kernel mode --persist: replace connections that die.
 *
 * The driver multicasts NBD_CMD_LINK_DEAD (group "nbd_mc_group") once for
 * every connection it marks dead (nbd_mark_nsock_dead). Requests then wait
 * for a live connection up to NBD_ATTR_DEAD_CONN_TIMEOUT; requests that
 * were in flight on the dead one are requeued when they time out
 * (NBD_ATTR_TIMEOUT). So a server restart costs a pause, not an error,
 * provided we bring a new socket in time: for each event we negotiate a
 * new connection (with backoff while the server is away), check that it
 * reached the same export (size, flags), and give it to the kernel with
 * NBD_CMD_RECONFIGURE, which puts it in the dead connection's slot. The
 * backend identifier makes the kernel refuse a socket meant for another
 * device.
 *
 * We stop when the device is detached (nbdfs --disconnect signals us
 * first; a periodic check catches other tools) or on SIGTERM/SIGINT,
 * which leave the device attached.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "kernelattach/kernel.h"
#include "nbdclient/error.h"

#define BACKOFF_FIRST_MS 200
#define BACKOFF_MAX_MS 5000
#define CHECK_INTERVAL_MS 2000

static volatile sig_atomic_t stop_requested;

static void
on_signal (int sig)
{
  stop_requested = sig;
}

/* One new connection into one dead slot. */
static gboolean
reconnect_one (NbdkNetlink *nl, NbdkPersist *p, GError **error)
{
  NbdExport exp = { 0 };
  int fd = nbdk_open_socket (&p->opts, &exp, error);
  gboolean ok;

  if (fd < 0)
    return FALSE;
  ok = nbdk_same_export (&p->exp, &exp, error)
    && nbdk_nl_reconfigure (nl, p->index, p->backend, &fd, 1, error);
  /* On success the kernel holds its own reference. */
  close (fd);
  nbdc_export_clear (&exp);
  return ok;
}

static gboolean
still_attached (int index)
{
  return nbdk_device_attached (index);
}

int
nbdk_persist_run (NbdkNetlink *nl, NbdkPersist *p)
{
  struct sigaction sa = { .sa_handler = on_signal };
  sigset_t block, orig;
  unsigned pending = 0, failures = 0;
  int backoff_ms = 0;
  gint64 next_try = 0, next_check = 0;
  char *last_error = NULL;

  sigemptyset (&sa.sa_mask);
  sigaction (SIGTERM, &sa, NULL);
  sigaction (SIGINT, &sa, NULL);
  signal (SIGHUP, SIG_IGN);
  signal (SIGPIPE, SIG_IGN);
  /* Signals are only delivered inside ppoll, so none is lost between the
   * check and the wait. */
  sigemptyset (&block);
  sigaddset (&block, SIGTERM);
  sigaddset (&block, SIGINT);
  sigprocmask (SIG_BLOCK, &block, &orig);

  g_message ("supervising /dev/nbd%d (%s)", p->index, p->backend);
  while (!stop_requested) {
    gint64 now = g_get_monotonic_time ();
    int wait_ms = CHECK_INTERVAL_MS;
    if (pending > 0)
      wait_ms = next_try > now ? (int) ((next_try - now) / 1000) : 0;
    struct pollfd pfd = { .fd = nbdk_nl_watch_fd (nl), .events = POLLIN };
    struct timespec ts = { wait_ms / 1000, (wait_ms % 1000) * 1000000L };
    int r = ppoll (&pfd, 1, &ts, &orig);
    if (r < 0 && errno != EINTR) {
      g_warning ("poll: %s", g_strerror (errno));
      break;
    }
    if (stop_requested)
      break;
    if (r > 0) {
      g_autoptr (GError) e = NULL;
      int dead = nbdk_nl_read_link_dead (nl, p->index, &e);
      if (dead < 0) {
        g_warning ("%s", e->message);
        break;
      }
      if (dead > 0) {
        g_message ("/dev/nbd%d: %d connection(s) lost, reconnecting",
                   p->index, dead);
        if (pending == 0)
          next_try = 0;
        pending += dead;
      }
    }

    now = g_get_monotonic_time ();
    if (now >= next_check || pending > 0) {
      next_check = now + CHECK_INTERVAL_MS * 1000;
      if (!still_attached (p->index)) {
        g_message ("/dev/nbd%d was detached; stopping", p->index);
        break;
      }
    }
    if (pending == 0 || now < next_try)
      continue;

    {
      g_autoptr (GError) e = NULL;
      if (reconnect_one (nl, p, &e)) {
        pending--;
        g_message ("/dev/nbd%d: reconnected%s", p->index,
                   failures ? " after retrying" : "");
        backoff_ms = 0;
        failures = 0;
        g_clear_pointer (&last_error, g_free);
        next_try = 0;
      }
      else {
        /* Say it when the reason changes, and now and again, not at
         * every retry. */
        if (failures++ % 10 == 0 || g_strcmp0 (last_error, e->message)) {
          g_warning ("/dev/nbd%d: reconnecting: %s (retrying)", p->index,
                     e->message);
          g_free (last_error);
          last_error = g_strdup (e->message);
        }
        backoff_ms = backoff_ms ? MIN (backoff_ms * 2, BACKOFF_MAX_MS)
                                : BACKOFF_FIRST_MS;
        next_try = g_get_monotonic_time () + backoff_ms * (gint64) 1000;
      }
    }
  }
  sigprocmask (SIG_SETMASK, &orig, NULL);
  g_free (last_error);
  return 0;
}
