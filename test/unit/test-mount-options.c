/* Unit tests: system/mount-options.c (fstab -o lists -> nbdfs options). */
#include <string.h>

#include "nbdclient/error.h"
#include "system/mount-options.h"

/* Expands argv (NULL-terminated) and returns it joined with '|'. */
static char *
expand (const char *const *argv, GError **error)
{
  int argc = (int) g_strv_length ((char **) argv);
  g_auto (GStrv) out = nbdfs_mount_options_expand (argc, (char *const *) argv,
                                                   error);
  return out ? g_strjoinv ("|", out) : NULL;
}

static void
check (const char *const *argv, const char *want)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *got = expand (argv, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (got, ==, want);
}

static void
check_error (const char *const *argv, const char *part)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *got = expand (argv, &error);
  g_assert_null (got);
  g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE);
  if (strstr (error->message, part) == NULL)
    g_error ("message '%s' lacks '%s'", error->message, part);
}

/* What mount.fuse3 runs for a fstab line. */
static void
test_fstab (void)
{
  check ((const char *[]) { "nbdfs", "localhost:disk", "/mnt", "-o",
                            "rw,noexec,nosuid,nodev,connections=2,"
                            "name=disk.img,allow_other", NULL },
         "nbdfs|localhost:disk|/mnt|--connections=2|--name=disk.img|"
         "-o|rw,noexec,nosuid,nodev,allow_other");
  /* ro: our --read-only and the kernel's ro flag. */
  check ((const char *[]) { "nbdfs", "h:e", "/mnt", "-o", "ro,all", NULL },
         "nbdfs|h:e|/mnt|--read-only|--all|-o|ro");
  check ((const char *[]) { "nbdfs", "h:e", "/mnt", "-o", "read-only",
                            NULL },
         "nbdfs|h:e|/mnt|--read-only");
  /* Every nbdfs option. */
  check ((const char *[]) { "nbdfs", "nbds://h/e", "/m", "-o",
                            "timeout=30,reconnect=5,connect-timeout=9,"
                            "tls=require,tls-certificates=/etc/pki/nbd,"
                            "tls-psk-file=/k.psk,tls-username=u,"
                            "tls-hostname=server.example,tls-no-verify,"
                            "verbose,pidfile=/run/n.pid", NULL },
         "nbdfs|nbds://h/e|/m|--timeout=30|--reconnect=5|"
         "--connect-timeout=9|--tls=require|"
         "--tls-certificates=/etc/pki/nbd|--tls-psk-file=/k.psk|"
         "--tls-username=u|--tls-hostname=server.example|--tls-no-verify|"
         "--verbose|--pidfile=/run/n.pid");
}

/* What only mount(8) and systemd read disappears. */
static void
test_dropped (void)
{
  check ((const char *[]) { "nbdfs", "h:e", "/mnt", "-o",
                            "defaults,_netdev,nofail,noauto,auto,user,"
                            "users,nouser,owner,group,user=alice,"
                            "comment=systemd.automount,x-systemd.automount,"
                            "x-systemd.requires=a.service,_rnetdev", NULL },
         "nbdfs|h:e|/mnt");
  check ((const char *[]) { "nbdfs", "h:e", "/mnt", "-o",
                            "defaults,allow_other,default_permissions", NULL },
         "nbdfs|h:e|/mnt|-o|allow_other,default_permissions");
}

/* The spellings of -o, several of them, and "--". */
static void
test_forms (void)
{
  check ((const char *[]) { "nbdfs", "-oconnections=3", "h:e",
                            "--option=allow_other", "/mnt",
                            "--option", "name=f,nonempty", "-o", "ro",
                            NULL },
         "nbdfs|--connections=3|h:e|/mnt|--name=f|--read-only|"
         "-o|allow_other,nonempty,ro");
  /* Options without -o pass untouched; after "--" nothing is rewritten. */
  check ((const char *[]) { "nbdfs", "-f", "-C", "2", "h:e", "/m", "--",
                            "-o", "all", NULL },
         "nbdfs|-f|-C|2|h:e|/m|--|-o|all");
  /* Empty items and an empty list. */
  check ((const char *[]) { "nbdfs", "h:e", "/m", "-o", ",,all,", "-o", "",
                            NULL },
         "nbdfs|h:e|/m|--all");
  /* "\," keeps a comma inside a value. */
  check ((const char *[]) { "nbdfs", "h:e", "/m", "-o",
                            "name=a\\,b,fsname=x\\,y", NULL },
         "nbdfs|h:e|/m|--name=a,b|-o|fsname=x\\,y");
}

static void
test_errors (void)
{
  check_error ((const char *[]) { "nbdfs", "h:e", "/m", "-o", NULL },
               "needs a list");
  check_error ((const char *[]) { "nbdfs", "h:e", "/m", "-o",
                                  "connections", NULL },
               "connections needs a value");
  check_error ((const char *[]) { "nbdfs", "h:e", "/m", "-o", "name=",
                                  NULL },
               "name needs a value");
  check_error ((const char *[]) { "nbdfs", "h:e", "/m", "-o", "all=1",
                                  NULL },
               "takes no value");
  check_error ((const char *[]) { "nbdfs", "h:e", "/m", "-o",
                                  "ro,persist", NULL },
               "persist is for kernel mode");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/system/mount-options/fstab", test_fstab);
  g_test_add_func ("/system/mount-options/dropped", test_dropped);
  g_test_add_func ("/system/mount-options/forms", test_forms);
  g_test_add_func ("/system/mount-options/errors", test_errors);
  return g_test_run ();
}
