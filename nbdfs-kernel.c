/* nbdfs --kernel, --status and --disconnect: kernel mode
 * (kernelattach/attach.h), daemonised and printed by the program layer. */
#include <stdio.h>

#include "nbdfs.h"
#include "kernelattach/attach.h"
#include "nbdclient/error.h"

/* ---- nbdfs --kernel ADDRESS [DEVICE] ---- */

typedef struct {
  NbdfsDaemon *daemon;
  gboolean stay;
  const char *where;          /* the address, for STATUS= */
} Ready;

/* The device is up: say which one (the output scripts read), then, in the
 * process that stays, the pidfile and "ready". */
static gboolean
on_ready (int index, void *data, GError **error)
{
  Ready *r = data;

  printf ("/dev/nbd%d\n", index);
  if (fflush (stdout) != 0)
    g_debug ("writing the device name failed");
  if (r->stay && !nbdfs_daemon_ready (r->daemon, error))
    return FALSE;
  nbdfs_notify_ready ("/dev/nbd%d attached to %s%s", index, r->where,
                      r->stay ? "" : " (no process stays: stop the unit "
                      "to disconnect)");
  return TRUE;
}

int
nbdfs_cmd_kernel (NbdfsCli *cli, GError **error)
{
  NbdkOptions o = {
    .nbd = &cli->nbd,
    .pool = &cli->pool,
    .device = cli->target,
    .persist = cli->persist,
    .use_ioctl = cli->use_ioctl,
  };
  g_autoptr (GError) err = NULL;
  int status = 0;

  NbdkRun *run = nbdk_start (&o, error);
  if (run == NULL)
    return -1;
  nbdfs_pidfile_absolute (&cli->pidfile);
  /* Without a process to keep, nbdfs exits once the device is attached:
   * nothing to daemonise, no pidfile. */
  NbdfsDaemon d = { .foreground = cli->foreground || !nbdk_must_stay (run),
                    .verbose = cli->verbose, .pidfile = cli->pidfile };
  g_autofree char *where = nbdc_address_describe (&cli->nbd.addr);
  Ready ready = { .daemon = &d, .stay = nbdk_must_stay (run),
                  .where = where };
  if (!nbdfs_daemon_begin (&d, &status, error)) {
    nbdk_free (run);      /* the parent, after the child's verdict */
    return status;
  }
  if (nbdk_serve (run, on_ready, &ready, &err) < 0)
    status = 1;
  if (ready.stay)
    nbdfs_notify_stopping ("stopped");
  nbdk_free (run);
  return nbdfs_daemon_end (&d, status, err, error);
}

/* ---- nbdfs --status [DEVICE] ---- */

static void
append_json (GString *s, GArray *devs, int only)
{
  gboolean first = TRUE;

  g_string_append (s, "{\"devices\": [");
  for (guint i = 0; i < devs->len; i++) {
    NbdkDeviceInfo *d = &g_array_index (devs, NbdkDeviceInfo, i);
    if (!d->attached && only < 0)
      continue;
    g_string_append_printf (s, "%s\n  {\"device\": \"/dev/nbd%d\", "
                            "\"index\": %d, \"attached\": %s",
                            first ? "" : ",", d->index, d->index,
                            d->attached ? "true" : "false");
    first = FALSE;
    if (d->attached) {
      g_string_append_printf (s, ", \"size\": %" G_GUINT64_FORMAT
                              ", \"pid\": %ld, \"backend\": ", d->size,
                              d->pid);
      nbdfs_json_append_string_or_null (s, d->backend);
      if (d->have_state) {
        g_string_append_printf (s, ", \"connections\": %u, "
                                "\"interface\": \"%s\", \"persist\": %s",
                                d->connections,
                                d->ioctl ? "ioctl" : "netlink",
                                d->persist ? "true" : "false");
        if (d->daemon_pid > 0)
          g_string_append_printf (s, ", \"daemon_pid\": %d", d->daemon_pid);
        else
          g_string_append (s, ", \"daemon_pid\": null");
      }
      else
        g_string_append (s, ", \"connections\": null");
    }
    g_string_append_c (s, '}');
  }
  g_string_append (s, first ? "]}\n" : "\n]}\n");
}

static void
append_text (GString *s, GArray *devs, int only)
{
  guint shown = 0;

  for (guint i = 0; i < devs->len; i++) {
    NbdkDeviceInfo *d = &g_array_index (devs, NbdkDeviceInfo, i);
    if (!d->attached) {
      if (only >= 0)
        g_string_append_printf (s, "/dev/nbd%d: not attached\n", d->index);
      continue;
    }
    shown++;
    g_string_append_printf (s, "/dev/nbd%d: %s, %" G_GUINT64_FORMAT " bytes",
                            d->index,
                            d->backend ? d->backend : "(unknown backend)",
                            d->size);
    if (d->have_state) {
      g_string_append_printf (s, ", %u connection%s, %s", d->connections,
                              d->connections == 1 ? "" : "s",
                              d->ioctl ? "ioctl" : "netlink");
      if (d->persist && d->daemon_pid > 0)
        g_string_append_printf (s, ", persist (pid %d)", d->daemon_pid);
      else if (d->persist)
        g_string_append (s, ", persist (supervisor not running)");
    }
    g_string_append_printf (s, ", pid %ld\n", d->pid);
  }
  if (shown == 0 && only < 0)
    g_string_append (s, "no nbd device is attached\n");
}

int
nbdfs_cmd_status (NbdfsCli *cli, GError **error)
{
  int only;
  g_autoptr (GArray) devs = nbdk_status (cli->target, &only, error);
  g_autoptr (GString) out = g_string_new (NULL);
  gboolean attached = FALSE;

  if (devs == NULL)
    return -1;
  for (guint i = 0; i < devs->len; i++)
    attached |= g_array_index (devs, NbdkDeviceInfo, i).attached;
  if (cli->json)
    append_json (out, devs, only);
  else
    append_text (out, devs, only);
  if (!nbdfs_output (out, "the device status", error))
    return -1;
  if (only >= 0 && !attached) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                 "/dev/nbd%d is not attached", only);
    return -1;
  }
  return 0;
}

/* ---- nbdfs --disconnect DEVICE ---- */

int
nbdfs_cmd_disconnect (NbdfsCli *cli, GError **error)
{
  return nbdk_disconnect (cli->target, error) ? 0 : -1;
}
