/* Unit tests: the pure parts of kernel mode (device names, the block size
 * the kernel gets, the backend identifier, the reconnect check). What
 * needs nbd.ko is tested in the VM (test/test-kernel-vm.sh). */
#include <string.h>
#include <unistd.h>

#include "kernelattach/kernel.h"
#include "nbdclient/error.h"
#include "nbdclient/protocol.h"

static void
test_device_names (void)
{
  static const struct { const char *name; int index; } good[] = {
    { "/dev/nbd0", 0 }, { "nbd0", 0 }, { "nbd15", 15 },
    { "/dev/nbd1234", 1234 },
  };
  static const char *const bad[] = {
    "", "nbd", "/dev/nbd", "nbdX", "nbd-1", "nbd01", "/dev/nbd0p1",
    "/dev/sda", "sda", "/dev/nbd0/", "nbd 1", "nbd+1", "/tmp/nbd0",
    "dev/nbd0", "nbd99999999",
  };

  for (gsize i = 0; i < G_N_ELEMENTS (good); i++) {
    int index = -1;
    g_autoptr (GError) error = NULL;
    g_assert_true (nbdk_device_parse (good[i].name, &index, &error));
    g_assert_no_error (error);
    g_assert_cmpint (index, ==, good[i].index);
  }
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++) {
    int index = -1;
    g_autoptr (GError) error = NULL;
    g_assert_false (nbdk_device_parse (bad[i], &index, &error));
    g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE);
    g_assert_nonnull (strstr (error->message, "expected /dev/nbdN or nbdN"));
    g_assert_cmpint (index, ==, -1);
  }
  {
    g_autoptr (GError) error = NULL;
    int index;
    g_assert_false (nbdk_device_parse (NULL, &index, &error));
    g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE);
  }
}

static void
test_block_size (void)
{
  long page = sysconf (_SC_PAGESIZE);
  NbdExport exp = { .min_block = 1, .pref_block = 4096,
                    .max_block = 32 << 20 };
  uint64_t bs = 0;
  g_autoptr (GError) error = NULL;

  /* The minimum counts, not the preferred size; never below 512. */
  g_assert_true (nbdk_block_size (&exp, &bs, &error));
  g_assert_cmpuint (bs, ==, 512);
  exp.min_block = 512;
  g_assert_true (nbdk_block_size (&exp, &bs, &error));
  g_assert_cmpuint (bs, ==, 512);
  exp.min_block = 1024;
  g_assert_true (nbdk_block_size (&exp, &bs, &error));
  g_assert_cmpuint (bs, ==, 1024);
  exp.min_block = 4096;
  g_assert_true (nbdk_block_size (&exp, &bs, &error));
  g_assert_cmpuint (bs, ==, 4096);
  g_assert_no_error (error);

  /* Above the page size the driver cannot follow: refused, FUSE named. */
  exp.min_block = (uint32_t) page * 2;
  bs = 0;
  g_assert_false (nbdk_block_size (&exp, &bs, &error));
  g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED);
  g_assert_nonnull (strstr (error->message, "FUSE mode"));
  g_assert_cmpuint (bs, ==, 0);
}

static char *
backend_for (const char *address, NbdcTlsMode tls)
{
  NbdcOptions opts = { 0 };
  g_autoptr (GError) error = NULL;
  char *id;

  g_assert_true (nbdc_address_parse (address, &opts.addr, &error));
  g_assert_no_error (error);
  opts.tls = tls;
  id = nbdk_backend_id (&opts);
  nbdc_address_clear (&opts.addr);
  return id;
}

static void
test_backend_id (void)
{
  static const struct { const char *address; const char *id; } cases[] = {
    { "/run/nbd.sock", "nbd+unix:///?socket=/run/nbd.sock" },
    { "/run/nbd.sock:disk", "nbd+unix:///disk?socket=/run/nbd.sock" },
    { "nbd+unix:///a%20b?socket=/tmp/s",
      "nbd+unix:///a%20b?socket=/tmp/s" },
    { "example.com:disk", "nbd://example.com:10809/disk" },
    { "nbd://example.com:2000/x/y", "nbd://example.com:2000/x/y" },
    { "[::1]:disk", "nbd://[::1]:10809/disk" },
    /* The abstract socket's name was lost here once. */
    { "nbd+unix:///e?socket=%00abs", "nbd+unix:///e?socket=%00abs" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *id = backend_for (cases[i].address, NBDC_TLS_OFF);
    g_assert_cmpstr (id, ==, cases[i].id);
  }
  g_autofree char *tls = backend_for ("example.com:disk", NBDC_TLS_REQUIRE);
  g_assert_cmpstr (tls, ==, "nbds://example.com:10809/disk");
}

static void
test_same_export (void)
{
  NbdExport a = { .size = 1 << 20, .eflags = NBD_FLAG_HAS_FLAGS
                  | NBD_FLAG_SEND_FLUSH, .min_block = 1 };
  NbdExport b = a;
  g_autoptr (GError) error = NULL;

  g_assert_true (nbdk_same_export (&a, &b, &error));
  g_assert_no_error (error);

  b.size = 2 << 20;
  g_assert_false (nbdk_same_export (&a, &b, &error));
  g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL);
  g_assert_nonnull (strstr (error->message, "size changed"));
  g_clear_error (&error);

  b = a;
  b.eflags |= NBD_FLAG_READ_ONLY;
  g_assert_false (nbdk_same_export (&a, &b, &error));
  g_assert_nonnull (strstr (error->message, "flags changed"));
  g_clear_error (&error);

  b = a;
  b.min_block = 4096;
  g_assert_false (nbdk_same_export (&a, &b, &error));
  g_assert_nonnull (strstr (error->message, "minimum block size changed"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/kernelattach/device-names", test_device_names);
  g_test_add_func ("/kernelattach/block-size", test_block_size);
  g_test_add_func ("/kernelattach/backend-id", test_backend_id);
  g_test_add_func ("/kernelattach/same-export", test_same_export);
  return g_test_run ();
}
