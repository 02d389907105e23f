/* nbdfs — entry point: parse and validate the command line, pick the
 * mode, print the one error line (style: "nbdfs: <msg>"). The program
 * layer (nbdfs.h) is the only code that prints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nbdfs.h"
#include "fuse/mount.h"
#include "nbdclient/error.h"
#include "system/mount-options.h"
#include "system/nbdtab.h"
#include "system/notify.h"

static const char summary[] =
  "Modes:\n"
  "  nbdfs [OPTION...] ADDRESS MOUNTPOINT      the export as a file (FUSE)\n"
  "  nbdfs --kernel [OPTION...] ADDRESS [/dev/nbdN]   attach a block device\n"
  "  nbdfs --list ADDRESS                      list the server's exports\n"
  "  nbdfs --info ADDRESS [--json]             describe one export\n"
  "  nbdfs --disconnect /dev/nbdN              detach a block device\n"
  "  nbdfs --status [/dev/nbdN]                show attached devices\n"
  "\n"
  "ADDRESS is host[:export], [ipv6][:export], /unix/socket[:export], or an\n"
  "NBD URI: nbd://host[:port]/export, nbds://..., nbd+unix:///export?socket=P";

static gboolean
parse_tls_mode (const char *s, NbdcTlsMode *mode, GError **error)
{
  if (s == NULL)
    return TRUE;
  if (strcmp (s, "off") == 0 || strcmp (s, "no") == 0)
    *mode = NBDC_TLS_OFF;
  else if (strcmp (s, "on") == 0 || strcmp (s, "allow") == 0)
    *mode = NBDC_TLS_ALLOW;
  else if (strcmp (s, "require") == 0 || strcmp (s, "yes") == 0)
    *mode = NBDC_TLS_REQUIRE;
  else {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "--tls=%s: expected off, on or require", s);
    return FALSE;
  }
  return TRUE;
}

/* Parses argv into *cli. Returns FALSE with a usage error. */
static gboolean
parse_args (int argc, char **argv, NbdfsCli *cli, GError **error)
{
  gint connections = 0, timeout = -1, handshake_timeout = 0, reconnect = -1;
  gboolean read_only = FALSE, version = FALSE, no_verify = FALSE;
  g_autofree char *tls = NULL;
  NbdcTlsConfig *tc = &cli->nbd.tls_config;
  g_auto (GStrv) rest = NULL;
  GOptionEntry entries[] = {
    { "list", 'l', 0, G_OPTION_ARG_NONE, &cli->list,
      "List the exports of the server at ADDRESS", NULL },
    { "info", 'i', 0, G_OPTION_ARG_NONE, &cli->info,
      "Show size, flags, block sizes and contexts of one export", NULL },
    { "json", 0, 0, G_OPTION_ARG_NONE, &cli->json,
      "Machine-readable output for --list, --info and --status", NULL },
    { "kernel", 'k', 0, G_OPTION_ARG_NONE, &cli->kernel,
      "Attach the export to a kernel /dev/nbdN device (root)", NULL },
    { "disconnect", 'd', 0, G_OPTION_ARG_NONE, &cli->disconnect,
      "Detach the /dev/nbdN device given as argument", NULL },
    { "status", 0, 0, G_OPTION_ARG_NONE, &cli->status,
      "Show attached /dev/nbdN devices", NULL },
    { "persist", 'p', 0, G_OPTION_ARG_NONE, &cli->persist,
      "Kernel mode: stay running and reconnect when a connection dies", NULL },
    { "ioctl", 0, 0, G_OPTION_ARG_NONE, &cli->use_ioctl,
      "Kernel mode: use the ioctl interface instead of netlink", NULL },
    { "connections", 'C', 0, G_OPTION_ARG_INT, &connections,
      "Number of connections (default 4 when the server allows multi-conn)",
      "N" },
    { "timeout", 't', 0, G_OPTION_ARG_INT, &timeout,
      "Declare a connection dead after SECONDS without a reply; its "
      "requests fail with EIO (FUSE default "
      G_STRINGIFY (NBDFS_FUSE_DEFAULT_TIMEOUT) ", 0 = never)", "SECONDS" },
    { "reconnect", 'R', 0, G_OPTION_ARG_INT, &reconnect,
      "FUSE: when a connection is lost, keep re-opening it for SECONDS "
      "while I/O waits, then fail that I/O with EIO (default "
      G_STRINGIFY (NBDFS_FUSE_DEFAULT_RECONNECT) ", 0 = fail at once)",
      "SECONDS" },
    { "connect-timeout", 0, 0, G_OPTION_ARG_INT, &handshake_timeout,
      "Give up connecting and negotiating after SECONDS (default 30)",
      "SECONDS" },
    { "read-only", 'r', 0, G_OPTION_ARG_NONE, &read_only,
      "Never write, even if the server allows it", NULL },
    { "all", 'a', 0, G_OPTION_ARG_NONE, &cli->all,
      "FUSE: show every export the server lists, one file each", NULL },
    { "name", 'n', 0, G_OPTION_ARG_STRING, &cli->file_name,
      "FUSE: name of the file in the mount", "FILE" },
    { "foreground", 'f', 0, G_OPTION_ARG_NONE, &cli->foreground,
      "Stay in the foreground, log to stderr", NULL },
    { "pidfile", 'P', 0, G_OPTION_ARG_FILENAME, &cli->pidfile,
      "Write the process ID to FILE once ready", "FILE" },
    { "option", 'o', 0, G_OPTION_ARG_STRING_ARRAY, &cli->fuse_opts,
      "FUSE mount option (allow_other, ...), repeatable", "OPT" },
    { "no-extended-headers", 0, 0, G_OPTION_ARG_NONE, &cli->nbd.no_extended,
      "Do not ask for NBD extended headers (debugging: structured replies "
      "and 32-bit lengths instead)", NULL },
    { "tls", 0, 0, G_OPTION_ARG_STRING, &tls,
      "TLS: off, on (if offered) or require (default: require for nbds://, "
      "else off)", "MODE" },
    { "tls-certificates", 0, 0, G_OPTION_ARG_FILENAME, &tc->certificates,
      "Directory with ca-cert.pem, client-cert.pem, client-key.pem", "DIR" },
    { "tls-psk-file", 0, 0, G_OPTION_ARG_FILENAME, &tc->psk_file,
      "Pre-shared keys file (psktool format)", "FILE" },
    { "tls-username", 0, 0, G_OPTION_ARG_STRING, &tc->username,
      "PSK identity (default: your login name)", "NAME" },
    { "tls-hostname", 0, 0, G_OPTION_ARG_STRING, &tc->hostname,
      "Host name to verify in the server certificate", "NAME" },
    { "tls-no-verify", 0, 0, G_OPTION_ARG_NONE, &no_verify,
      "Do not verify the server certificate (insecure)", NULL },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &cli->verbose,
      "Debug messages, including every protocol step", NULL },
    { "nbdtab", 0, 0, G_OPTION_ARG_FILENAME, &cli->nbdtab,
      "Kernel mode as DEVICE's line in FILE (nbd-client's /etc/nbdtab "
      "format) says", "FILE" },
    { "version", 'V', 0, G_OPTION_ARG_NONE, &version,
      "Print the version and the library versions, and exit", NULL },
    { G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_STRING_ARRAY, &rest, NULL, NULL },
    { NULL }
  };
  g_autoptr (GOptionContext) ctx =
    g_option_context_new ("ADDRESS [MOUNTPOINT|DEVICE]");
  g_option_context_set_summary (ctx, summary);
  g_option_context_add_main_entries (ctx, entries, NULL);
  g_autoptr (GError) opt_error = NULL;
  if (!g_option_context_parse (ctx, &argc, &argv, &opt_error)) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "%s (see nbdfs --help)", opt_error->message);
    return FALSE;
  }
  if (version) {
    nbdfs_print_version ();
    exit (EXIT_SUCCESS);
  }
  if (connections < 0 || timeout < -1 || handshake_timeout < 0
      || reconnect < -1) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "-C, --timeout, --reconnect and --connect-timeout take "
                 "numbers >= 0");
    return FALSE;
  }
  if (reconnect >= 0 && (cli->kernel || cli->disconnect || cli->status)) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "--reconnect is for FUSE mode; in kernel mode use --persist "
                 "(the supervisor replaces lost connections)");
    return FALSE;
  }
  cli->pool.connections = connections;
  /* Kernel mode keeps its own defaults (kernelattach/run.c): 0 there
   * means "not given". FUSE mode has no kernel timeout behind it, so
   * without ours a silent server would hang every I/O and the unmount. */
  if (cli->kernel)
    cli->pool.request_timeout = timeout < 0 ? 0 : timeout;
  else {
    cli->pool.request_timeout = timeout < 0 ? NBDFS_FUSE_DEFAULT_TIMEOUT
      : timeout;
    cli->pool.reconnect = reconnect < 0 ? NBDFS_FUSE_DEFAULT_RECONNECT
      : reconnect;
    /* Connections on demand (nbdclient/pool-grow.c): a mount opens one,
     * -C N is the most. Kernel mode hands all N to nbd.ko at attach
     * (kernelattach/sockets.c, not the pool). NBDFS_IDLE_CLOSE_MS is for
     * tests: how long an extra connection may idle before it is closed
     * (default 30 s). */
    cli->pool.on_demand = TRUE;
    const char *idle = g_getenv ("NBDFS_IDLE_CLOSE_MS");
    if (idle)
      cli->pool.idle_close_ms = (unsigned) g_ascii_strtoull (idle, NULL, 10);
  }
  cli->pool.read_only = read_only;
  cli->nbd.handshake_timeout = handshake_timeout;
  tc->no_verify = no_verify;
  if (!parse_tls_mode (tls, &cli->nbd.tls, error))
    return FALSE;

  guint n = rest ? g_strv_length (rest) : 0;
  const char *address = n > 0 ? rest[0] : NULL;
  const char *target = n > 1 ? rest[1] : NULL;
  if (n > 2) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "unexpected argument '%s' (see nbdfs --help)", rest[2]);
    return FALSE;
  }
  if (cli->nbdtab) {
    /* main() reads the line and parses again with it. */
    if (n != 1) {
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                   "--nbdtab FILE takes one argument, the device "
                   "(nbdfs --nbdtab=/etc/nbdtab nbd0)");
      return FALSE;
    }
    cli->target = g_strdup (address);
    return TRUE;
  }

  if (cli->disconnect || (cli->status && !cli->kernel)) {
    /* These take a device, not an address. */
    if (cli->disconnect && address == NULL) {
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                   "--disconnect needs a device, e.g. nbdfs -d /dev/nbd0");
      return FALSE;
    }
    cli->target = g_strdup (address);
    return TRUE;
  }
  if (address == NULL) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "missing ADDRESS: try nbdfs localhost:export /mnt/disk "
                 "(see nbdfs --help)");
    return FALSE;
  }
  if (!nbdc_address_parse (address, &cli->nbd.addr, error))
    return FALSE;
  /* Credentials given on the command line mean TLS (as with qemu-nbd
   * --tls-creds): never send the data in clear text just
   * because --tls was forgotten. */
  gboolean cli_creds = tc->certificates || tc->psk_file;
  /* URI query parameters fill in what the options left unset (tls-config.c). */
  if (!nbdc_tls_config_merge_uri (tc, &cli->nbd.addr, error))
    return FALSE;
  if (cli->nbd.tls == NBDC_TLS_DEFAULT)
    cli->nbd.tls = cli->nbd.addr.tls == NBDC_TLS_REQUIRE || cli_creds
      ? NBDC_TLS_REQUIRE : NBDC_TLS_OFF;
  else if (cli->nbd.addr.tls == NBDC_TLS_REQUIRE
           && cli->nbd.tls != NBDC_TLS_REQUIRE) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "%s asks for TLS (nbds scheme) but --tls says otherwise; "
                 "drop one of them", address);
    return FALSE;
  }
  if (cli->list || cli->info) {
    if (target) {
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                   "--list/--info take only an ADDRESS, not '%s'", target);
      return FALSE;
    }
    return TRUE;
  }
  if (!cli->kernel && target == NULL) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE,
                 "missing MOUNTPOINT: nbdfs %s /mnt/disk (or --kernel for "
                 "/dev/nbdN, --info to inspect)", address);
    return FALSE;
  }
  cli->target = g_strdup (target);
  return TRUE;
}

static void
clear_cli (NbdfsCli *cli)
{
  nbdc_options_clear (&cli->nbd);
  g_free (cli->target);
  g_free (cli->file_name);
  g_free (cli->pidfile);
  g_free (cli->nbdtab);
  g_strfreev (cli->fuse_opts);
  memset (cli, 0, sizeof *cli);
}

/* parse_args on a vector we keep: GOption reorders the array it parses,
 * so it gets a shallow copy. */
static gboolean
parse (char **args, NbdfsCli *cli, GError **error)
{
  int argc = (int) g_strv_length (args);
  g_autofree char **copy = g_memdup2 (args, (argc + 1) * sizeof *args);
  return parse_args (argc, copy, cli, error);
}

/* --nbdtab FILE DEVICE: the arguments again with DEVICE's line in FILE
 * (system/nbdtab.h) put in: its options first (so the command line's
 * win), --kernel, and the address and device where DEVICE was. Prints
 * the line's warnings (ignored options). */
static char **
nbdtab_args (const NbdfsCli *cli, char **args, GError **error)
{
  NbdfsNbdtabEntry e;
  if (!nbdfs_nbdtab_load (cli->nbdtab, cli->target, &e, error))
    return NULL;
  for (char **w = e.warnings; *w; w++)
    fprintf (stderr, "nbdfs: warning: %s\n", *w);

  GPtrArray *a = g_ptr_array_new ();
  g_ptr_array_add (a, g_strdup (args[0]));
  for (char **o = e.args; *o; o++)
    g_ptr_array_add (a, g_strdup (*o));
  g_ptr_array_add (a, g_strdup ("--kernel"));
  /* The device is the last argument equal to it (the only positional). */
  int device_at = -1;
  for (int i = 1; args[i]; i++)
    if (strcmp (args[i], cli->target) == 0)
      device_at = i;
  for (int i = 1; args[i]; i++) {
    if (g_str_has_prefix (args[i], "--nbdtab="))
      continue;
    if (strcmp (args[i], "--nbdtab") == 0) {
      if (args[i + 1])
        i++;
      continue;
    }
    if (i == device_at) {
      g_ptr_array_add (a, g_strdup (e.address));
      g_ptr_array_add (a, g_strdup (e.device));
      continue;
    }
    g_ptr_array_add (a, g_strdup (args[i]));
  }
  g_ptr_array_add (a, NULL);
  g_debug ("%s line %u: %s %s", cli->nbdtab, e.line, e.address, e.device);
  nbdfs_nbdtab_entry_clear (&e);
  return (char **) g_ptr_array_free (a, FALSE);
}

int
main (int argc, char **argv)
{
  NbdfsCli cli = { 0 };
  g_autoptr (GError) error = NULL;
  int r;

  /* fstab: mount.fuse3 runs "nbdfs ADDRESS MNT -o OPTS"; our options in
   * OPTS become our long options (system/mount-options.h). */
  g_auto (GStrv) args = nbdfs_mount_options_expand (argc, argv, &error);
  if (args == NULL || !parse (args, &cli, &error)) {
    fprintf (stderr, "nbdfs: %s\n", error->message);
    return 2;
  }
  if (cli.nbdtab) {
    g_auto (GStrv) again = nbdtab_args (&cli, args, &error);
    clear_cli (&cli);
    if (again == NULL || !parse (again, &cli, &error)) {
      fprintf (stderr, "nbdfs: %s\n", error->message);
      return 2;
    }
  }
  /* Type=notify: systemd watches this process, so it must not fork away
   * (the unit's ExecStart says -f anyway). */
  if (nbdfs_notify_wanted ())
    cli.foreground = TRUE;
  /* Every mode's messages take one way (stderr until a daemon leaves the
   * terminal, then syslog) in one format. */
  nbdfs_log_setup (FALSE, cli.verbose);
  /* nbdclient's per-request debug guards ask GLib whether debug output is
   * wanted (g_log_writer_default_would_drop). */
  if (cli.verbose)
    g_setenv ("G_MESSAGES_DEBUG", "all", TRUE);

  if (cli.list)
    r = nbdfs_cmd_list (&cli, &error);
  else if (cli.info)
    r = nbdfs_cmd_info (&cli, &error);
  else if (cli.disconnect)
    r = nbdfs_cmd_disconnect (&cli, &error);
  else if (cli.status)
    r = nbdfs_cmd_status (&cli, &error);
  else if (cli.kernel)
    r = nbdfs_cmd_kernel (&cli, &error);
  else
    r = nbdfs_cmd_fuse (&cli, &error);

  if (r < 0) {
    fprintf (stderr, "nbdfs: %s\n",
             error ? error->message : "failed (no reason given: a bug)");
    r = 1;
  }
  nbdfs_notify_flush ();
  clear_cli (&cli);
  return r;
}
