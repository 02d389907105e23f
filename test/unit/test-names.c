/* Unit tests: names.c (numbers -> names, NBD_E* <-> errno, eflags words,
 * escaping of server text). */
#include <errno.h>
#include <string.h>

#include "nbdclient/names.h"
#include "nbdclient/protocol.h"

static void
test_names (void)
{
  g_assert_cmpstr (nbdc_opt_name (NBD_OPT_EXPORT_NAME), ==, "export name");
  g_assert_cmpstr (nbdc_opt_name (NBD_OPT_GO), ==, "go");
  g_assert_cmpstr (nbdc_opt_name (NBD_OPT_LIST), ==, "list");
  g_assert_cmpstr (nbdc_opt_name (NBD_OPT_STARTTLS), ==, "starttls");
  g_assert_cmpstr (nbdc_opt_name (NBD_OPT_SET_META_CONTEXT), ==,
                   "set meta context");
  g_assert_cmpstr (nbdc_opt_name (999), ==, "unknown");
  g_assert_cmpstr (nbdc_rep_name (NBD_REP_ACK), ==, "ack");
  g_assert_cmpstr (nbdc_rep_name (NBD_REP_ERR_UNKNOWN), ==, "export unknown");
  g_assert_cmpstr (nbdc_rep_name (NBD_REP_ERR_TLS_REQD), ==, "TLS required");
  g_assert_cmpstr (nbdc_rep_name (NBD_REP_FLAG_ERROR | 77), ==,
                   "unknown error");
  g_assert_cmpstr (nbdc_rep_name (77), ==, "unknown");
  g_assert_cmpstr (nbdc_info_name (NBD_INFO_BLOCK_SIZE), ==, "block size");
  g_assert_cmpstr (nbdc_info_name (1000), ==, "unknown");
  g_assert_cmpstr (nbdc_cmd_name (NBD_CMD_WRITE_ZEROES), ==, "write zeroes");
  g_assert_cmpstr (nbdc_cmd_name (NBD_CMD_DISC), ==, "disconnect");
  g_assert_cmpstr (nbdc_reply_type_name (NBD_REPLY_TYPE_OFFSET_HOLE), ==,
                   "offset hole");
  g_assert_cmpstr (nbdc_reply_type_name (NBD_REPLY_TYPE_ERROR_OFFSET), ==,
                   "error offset");
  g_assert_cmpstr (nbdc_reply_type_name (0x8064), ==, "unknown error");
  g_assert_cmpstr (nbdc_err_name (NBD_ENOSPC), ==, "ENOSPC");
  g_assert_cmpstr (nbdc_err_name (4242), ==, "unknown error");
  /* Every defined option and reply has a real name. */
  for (uint32_t o = 1; o <= NBD_OPT_EXTENDED_HEADERS; o++)
    g_assert_cmpstr (nbdc_opt_name (o), !=, "unknown");
  for (uint32_t r = 1; r <= 4; r++)
    g_assert_cmpstr (nbdc_rep_name (r), !=, "unknown");
  for (uint32_t r = 1; r <= 10; r++)
    g_assert_cmpstr (nbdc_rep_name (NBD_REP_FLAG_ERROR | r), !=,
                     "unknown error");
}

static void
test_errno (void)
{
  static const struct { uint32_t nbd; int err; } map[] = {
    { NBD_SUCCESS, 0 }, { NBD_EPERM, EPERM }, { NBD_EIO, EIO },
    { NBD_ENOMEM, ENOMEM }, { NBD_EINVAL, EINVAL }, { NBD_ENOSPC, ENOSPC },
    { NBD_EOVERFLOW, EOVERFLOW }, { NBD_ENOTSUP, ENOTSUP },
    { NBD_ESHUTDOWN, ESHUTDOWN },
  };
  for (size_t i = 0; i < G_N_ELEMENTS (map); i++) {
    g_assert_cmpint (nbdc_errno_from_nbd (map[i].nbd), ==, map[i].err);
    g_assert_cmpuint (nbdc_nbd_from_errno (map[i].err), ==, map[i].nbd);
  }
  /* "Error values": unexpected values are treated as NBD_EINVAL. */
  g_assert_cmpint (nbdc_errno_from_nbd (2), ==, EINVAL);       /* ENOENT */
  g_assert_cmpint (nbdc_errno_from_nbd (0xffffffff), ==, EINVAL);
  g_assert_cmpint (nbdc_errno_from_nbd (13), ==, EINVAL);      /* EACCES */
  /* Server side: EDQUOT and EFBIG map to NBD_ENOSPC. */
  g_assert_cmpuint (nbdc_nbd_from_errno (EDQUOT), ==, NBD_ENOSPC);
  g_assert_cmpuint (nbdc_nbd_from_errno (EFBIG), ==, NBD_ENOSPC);
  g_assert_cmpuint (nbdc_nbd_from_errno (EROFS), ==, NBD_EPERM);
  g_assert_cmpuint (nbdc_nbd_from_errno (ENOENT), ==, NBD_EIO);
}

static void
test_eflags (void)
{
  g_autofree char *a = nbdc_eflags_to_string (NBD_FLAG_HAS_FLAGS);
  g_assert_cmpstr (a, ==, "none");
  g_autofree char *b = nbdc_eflags_to_string
    (NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH
     | NBD_FLAG_CAN_MULTI_CONN);
  g_assert_cmpstr (b, ==, "read-only, flush, multi-conn");
  g_autofree char *c = nbdc_eflags_to_string (0xded);
  g_assert_cmpstr (c, ==, "flush, fua, trim, write-zeroes, df, multi-conn, "
                   "cache, fast-zero");
  g_autofree char *d = nbdc_eflags_to_string (0x8001);
  g_assert_cmpstr (d, ==, "unknown 0x8000");
}

static void
check_escape (const char *in, size_t len, size_t max, const char *want)
{
  g_autofree char *got = nbdc_escape_text (in, len, max);
  g_assert_cmpstr (got, ==, want);
  g_assert_true (g_utf8_validate (got, -1, NULL));
}

static void
test_escape (void)
{
  check_escape ("hello", 5, 100, "hello");
  check_escape ("a\nb\tc\\", 6, 100, "a\\nb\\tc\\\\");
  check_escape ("a\0b", 3, 100, "a\\x00b");
  check_escape ("\x1b[31mred", 8, 100, "\\x1b[31mred");
  check_escape ("\x7f", 1, 100, "\\x7f");
  /* Valid UTF-8 is kept, invalid bytes are escaped one by one. */
  check_escape ("caf\xc3\xa9", 5, 100, "caf\xc3\xa9");
  check_escape ("\xe2\x82\xac", 3, 100, "\xe2\x82\xac");
  check_escape ("\xff\xfe", 2, 100, "\\xff\\xfe");
  check_escape ("\xc3", 1, 100, "\\xc3");              /* truncated */
  check_escape ("\xc0\xaf", 2, 100, "\\xc0\\xaf");     /* overlong */
  check_escape ("\xed\xa0\x80", 3, 100, "\\xed\\xa0\\x80"); /* surrogate */
  check_escape ("\xc2\x9b", 2, 100, "\\xc2\\x9b");     /* C1 CSI */
  /* Capped: at most max input bytes, then "...". */
  check_escape ("abcdef", 6, 3, "abc...");
  check_escape ("abc", 3, 3, "abc");
  /* A multi-byte character cut by the cap is escaped, not split. */
  check_escape ("a\xe2\x82\xac", 4, 2, "a\\xe2...");
  check_escape (NULL, 0, 10, "");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/nbdclient/names/names", test_names);
  g_test_add_func ("/nbdclient/names/errno", test_errno);
  g_test_add_func ("/nbdclient/names/eflags", test_eflags);
  g_test_add_func ("/nbdclient/names/escape", test_escape);
  return g_test_run ();
}
