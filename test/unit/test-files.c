/* Unit tests: fuse/files.c, the file name an export gets (README "FUSE
 * mode": '/' and control bytes become '_', "." and ".." get a '_' in
 * front, names longer than NAME_MAX are cut at a UTF-8 character
 * boundary, the default export is "disk"). The "-2", "-3" suffixes of
 * --all need a server: test/test-fuse-names.sh. */
#include <limits.h>
#include <string.h>

#include "fuse/fs.h"

static void
check (const char *export_name, const char *want)
{
  g_autofree char *got = nbdfs_file_name_for_export (export_name);
  g_assert_cmpstr (got, ==, want);
}

static void
test_plain (void)
{
  check (NULL, "disk");
  check ("", "disk");
  check ("vm", "vm");
  check ("a/b", "a_b");
  check ("/", "_");
  check ("//x//", "__x__");
  check ("...", "...");
  check (".x", ".x");
  check ("x.", "x.");
  check ("caf\xc3\xa9", "caf\xc3\xa9");   /* UTF-8 kept as it is */
}

static void
test_dots (void)
{
  check (".", "_.");
  check ("..", "_..");
  check ("./x", "._x");
  check ("../..", ".._..");
}

static void
test_control_bytes (void)
{
  check ("a\x01" "b", "a_b");
  check ("\x1f", "_");
  check ("tab\there", "tab_here");
  check ("new\nline", "new_line");
  check ("del\x7f", "del_");
  check (" sp ", " sp ");            /* 0x20 is printable */
  check ("~", "~");                  /* 0x7e too */
  /* Bytes >= 0x80 are left to the UTF-8 rules (not control bytes). */
  check ("\x80\xff", "\x80\xff");
}

/* A name of N bytes made of REPEAT copies of UNIT after PREFIX. */
static char *
make_name (const char *prefix, const char *unit, size_t repeat)
{
  GString *s = g_string_new (prefix);
  for (size_t i = 0; i < repeat; i++)
    g_string_append (s, unit);
  return g_string_free (s, FALSE);
}

static void
test_length (void)
{
  /* Exactly NAME_MAX bytes: kept. */
  g_autofree char *a = make_name ("", "x", NAME_MAX);
  check (a, a);
  /* One more: cut to NAME_MAX. */
  g_autofree char *b = make_name ("", "x", NAME_MAX + 1);
  g_autofree char *bn = nbdfs_file_name_for_export (b);
  g_assert_cmpuint (strlen (bn), ==, NAME_MAX);
  g_assert_true (strncmp (bn, b, NAME_MAX) == 0);

  /* 2-byte characters: byte 255 is the second half of the 128th, so the
   * cut backs up to 254 bytes (127 whole characters). */
  g_autofree char *c = make_name ("", "\xc3\xa9", 150);
  g_autofree char *cn = nbdfs_file_name_for_export (c);
  g_assert_cmpuint (strlen (cn), ==, 254);
  g_assert_true (g_utf8_validate (cn, -1, NULL));
  g_assert_cmpuint (g_utf8_strlen (cn, -1), ==, 127);

  /* 4-byte characters after 1 byte: 1 + 63*4 = 253, the 64th would end
   * at 257: cut to 253. */
  g_autofree char *d = make_name ("x", "\xf0\x9f\x98\x80", 80);
  g_autofree char *dn = nbdfs_file_name_for_export (d);
  g_assert_cmpuint (strlen (dn), ==, 253);
  g_assert_true (g_utf8_validate (dn, -1, NULL));

  /* 3-byte characters ending exactly at 255 (85 * 3): nothing to back. */
  g_autofree char *e = make_name ("", "\xe2\x82\xac", 90);
  g_autofree char *en = nbdfs_file_name_for_export (e);
  g_assert_cmpuint (strlen (en), ==, 255);
  g_assert_true (g_utf8_validate (en, -1, NULL));

  /* The cut applies after the replacements ('/' -> '_' keeps lengths). */
  g_autofree char *f = make_name ("", "/", 300);
  g_autofree char *fn = nbdfs_file_name_for_export (f);
  g_assert_cmpuint (strlen (fn), ==, NAME_MAX);
  g_assert_null (strchr (fn, '/'));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/fuse/files/plain", test_plain);
  g_test_add_func ("/fuse/files/dots", test_dots);
  g_test_add_func ("/fuse/files/control-bytes", test_control_bytes);
  g_test_add_func ("/fuse/files/length", test_length);
  return g_test_run ();
}
