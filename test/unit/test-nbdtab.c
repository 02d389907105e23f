/* Unit tests: system/nbdtab.c (nbd-client's /etc/nbdtab -> nbdfs). */
#include <string.h>

#include <glib/gstdio.h>

#include "nbdclient/error.h"
#include "system/nbdtab.h"

static const char tab[] =
  "# nbdtab as nbd-client reads it\n"
  "nbd0 server.example data\n"
  "nbd1\tserver.example   swapless  conns=2,timeout=30,persist,port=10810 "
  "# trailing comment\n"
  "   nbd2 /run/nbd.sock disk unix,_netdev,_local\n"
  "nbd3 ::1 a/b%c bs=4096,no_optgo,nofork\n"
  "nbd4 tls.example secret certfile=/etc/nbd/client-cert.pem,"
  "keyfile=/etc/nbd/client-key.pem,cacertfile=/etc/nbd/ca-cert.pem,"
  "tlshostname=tls.example\n"
  "nbd5 h e connections=3,read-only,tls-psk-file=/k,tls-username=u,ioctl\n"
  "nbd6 h e swap\n"
  "nbd7 h e persits\n"
  "nbd8 h\n"
  "nbd9 h e persist, conns=2\n"
  "nbd10 h e certfile=/a/cert.pem,keyfile=/a/client-key.pem\n"
  "nbd11 h e cacertfile=/a/ca-cert.pem,certfile=/b/client-cert.pem,"
  "keyfile=/b/client-key.pem\n"
  "nbd12 h e conns=two\n"
  "nbd13 rel.sock e unix\n"
  "nbd1 other.example duplicate\n";

static char *
joined (char **v)
{
  return g_strjoinv ("|", v);
}

static void
check (const char *dev, const char *address, const char *args,
       const char *warnings)
{
  NbdfsNbdtabEntry e;
  g_autoptr (GError) error = NULL;
  g_assert_true (nbdfs_nbdtab_lookup (tab, "/etc/nbdtab", dev, &e, &error));
  g_assert_no_error (error);
  g_autofree char *a = joined (e.args);
  g_autofree char *w = joined (e.warnings);
  g_assert_cmpstr (e.address, ==, address);
  g_assert_cmpstr (a, ==, args);
  g_assert_cmpstr (w, ==, warnings);
  g_assert_true (g_str_has_prefix (e.device, "/dev/nbd"));
  nbdfs_nbdtab_entry_clear (&e);
}

static void
check_error (const char *dev, const char *part)
{
  NbdfsNbdtabEntry e;
  g_autoptr (GError) error = NULL;
  if (nbdfs_nbdtab_lookup (tab, "/etc/nbdtab", dev, &e, &error))
    g_error ("%s: accepted", dev);
  g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE);
  if (strstr (error->message, part) == NULL)
    g_error ("message '%s' lacks '%s'", error->message, part);
  g_assert_null (e.args);
}

static void
test_honoured (void)
{
  check ("nbd0", "nbd://server.example/data", "", "");
  check ("/dev/nbd1", "nbd://server.example:10810/swapless",
         "--connections=2|--timeout=30|--persist", "");
  check ("nbd2", "nbd+unix:///disk?socket=/run/nbd.sock", "", "");
  check ("nbd4", "nbds://tls.example/secret",
         "--tls-hostname=tls.example|--tls-certificates=/etc/nbd", "");
  check ("nbd5", "nbd://h/e",
         "--connections=3|--read-only|--tls-psk-file=/k|--tls-username=u|"
         "--ioctl", "");
}

static void
test_ignored (void)
{
  /* IPv6 in brackets, the export name escaped. */
  NbdfsNbdtabEntry e;
  g_autoptr (GError) error = NULL;
  g_assert_true (nbdfs_nbdtab_lookup (tab, "/etc/nbdtab", "nbd3", &e,
                                      &error));
  g_assert_cmpstr (e.address, ==, "nbd://[::1]/a%2Fb%25c");
  g_assert_cmpstr (e.device, ==, "/dev/nbd3");
  g_assert_cmpuint (e.line, ==, 5);
  g_assert_cmpuint (g_strv_length (e.warnings), ==, 3);
  g_assert_nonnull (strstr (e.warnings[0], "bs=4096 ignored"));
  g_assert_nonnull (strstr (e.warnings[1], "no_optgo ignored"));
  g_assert_nonnull (strstr (e.warnings[2], "nofork ignored"));
  g_assert_nonnull (strstr (e.warnings[0], "/etc/nbdtab line 5"));
  nbdfs_nbdtab_entry_clear (&e);
}

static void
test_refused (void)
{
  check_error ("nbd6", "swap is not supported");
  check_error ("nbd7", "unknown option 'persits'");
  check_error ("nbd8", "found 2 field(s)");
  check_error ("nbd9", "not blanks");
  check_error ("nbd10", "certfile=/a/cert.pem");
  check_error ("nbd11", "not in /a");
  check_error ("nbd12", "conns needs a number");
  check_error ("nbd13", "absolute path");
  check_error ("nbd99", "no line for nbd99");
  /* Line numbers in messages. */
  check_error ("nbd7", "/etc/nbdtab line 9:");
}

static void
test_load (void)
{
  NbdfsNbdtabEntry e;
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("nbdtab-XXXXXX", NULL);
  g_autofree char *path = g_build_filename (dir, "nbdtab", NULL);
  g_assert_false (nbdfs_nbdtab_load (path, "nbd0", &e, &error));
  g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE);
  g_clear_error (&error);
  g_assert_true (g_file_set_contents (path, "nbd0 h e persist\n", -1, NULL));
  g_assert_true (nbdfs_nbdtab_load (path, "nbd0", &e, &error));
  g_assert_cmpstr (e.args[0], ==, "--persist");
  nbdfs_nbdtab_entry_clear (&e);
  g_unlink (path);
  g_rmdir (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/system/nbdtab/honoured", test_honoured);
  g_test_add_func ("/system/nbdtab/ignored", test_ignored);
  g_test_add_func ("/system/nbdtab/refused", test_refused);
  g_test_add_func ("/system/nbdtab/load", test_load);
  return g_test_run ();
}
