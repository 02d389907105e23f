/* Unit tests: nbdc_address_parse / describe / copy (address.h, nbd-uri.md). */
#include <string.h>

#include "nbdclient/address.h"
#include "nbdclient/error.h"

typedef struct {
  const char *in;
  const char *host, *port, *socket, *export;
  size_t socket_len;            /* 0: strlen (socket) */
  NbdcTlsMode tls;
  const char *describe;
} Good;

static const Good good[] = {
  { "localhost", "localhost", "10809", NULL, "", 0, NBDC_TLS_DEFAULT,
    "localhost:10809" },
  { "localhost:disk", "localhost", "10809", NULL, "disk", 0, 0,
    "localhost:10809" },
  { "example.com:a:b", "example.com", "10809", NULL, "a:b", 0, 0, NULL },
  { "10.0.0.1:/dev/sda", "10.0.0.1", "10809", NULL, "/dev/sda", 0, 0, NULL },
  { "host:", "host", "10809", NULL, "", 0, 0, NULL },
  { "host:disk1", "host", "10809", NULL, "disk1", 0, 0, NULL },
  { "[::1]", "::1", "10809", NULL, "", 0, 0, "[::1]:10809" },
  { "[::1]:disk", "::1", "10809", NULL, "disk", 0, 0, NULL },
  { "[fe80::1%eth0]:x", "fe80::1%eth0", "10809", NULL, "x", 0, 0, NULL },
  { "/tmp/sock", NULL, NULL, "/tmp/sock", "", 0, 0, "unix:/tmp/sock" },
  { "/tmp/sock:exp:with:colons", NULL, NULL, "/tmp/sock", "exp:with:colons",
    0, 0, NULL },
  { "./rel.sock:e", NULL, NULL, "./rel.sock", "e", 0, 0, NULL },
  { "nbd://example.com", "example.com", "10809", NULL, "", 0, 0, NULL },
  { "nbd://example.com/", "example.com", "10809", NULL, "", 0, 0, NULL },
  { "nbd://example.com/disk", "example.com", "10809", NULL, "disk", 0, 0,
    NULL },
  { "nbd://example.com//disk", "example.com", "10809", NULL, "/disk", 0, 0,
    NULL },
  { "nbd://example.com/hello%20world", "example.com", "10809", NULL,
    "hello world", 0, 0, NULL },
  { "nbd://example.com:1234/x", "example.com", "1234", NULL, "x", 0, 0,
    "example.com:1234" },
  { "NBD://Example.com:1234", "Example.com", "1234", NULL, "", 0, 0, NULL },
  { "nbd://[::1]:1234/x", "::1", "1234", NULL, "x", 0, 0, "[::1]:1234" },
  { "nbd://[2001:db8::1]/", "2001:db8::1", "10809", NULL, "", 0, 0, NULL },
  { "nbd://[fe80::1%25eth0]:99/d", "fe80::1%eth0", "99", NULL, "d", 0, 0,
    NULL },
  { "nbds://example.com/x", "example.com", "10809", NULL, "x", 0,
    NBDC_TLS_REQUIRE, NULL },
  { "nbd+unix:///disk?socket=/tmp/s", NULL, NULL, "/tmp/s", "disk", 0, 0,
    "unix:/tmp/s" },
  { "nbd+unix:///?socket=sock", NULL, NULL, "sock", "", 0, 0, NULL },
  { "nbd+unix://?socket=%2Ftmp%2Fs%20p", NULL, NULL, "/tmp/s p", "", 0, 0,
    NULL },
  { "nbds+unix:///e?socket=/s", NULL, NULL, "/s", "e", 0, NBDC_TLS_REQUIRE,
    NULL },
  { "nbd+unix:///?socket=%00/abstract", NULL, NULL, "\0/abstract", "", 10, 0,
    "unix:@/abstract" },
  { "nbd://h/x?x-foo=bar&tls-type=x509", "h", "10809", NULL, "x", 0, 0, NULL },
  { "nbd://h/%e2%82%ac", "h", "10809", NULL, "\xe2\x82\xac", 0, 0, NULL },
};

static void
test_good (void)
{
  for (size_t i = 0; i < G_N_ELEMENTS (good); i++) {
    const Good *g = &good[i];
    NbdAddress a = { 0 };
    g_autoptr (GError) error = NULL;
    g_test_message ("parsing %s", g->in);
    if (!nbdc_address_parse (g->in, &a, &error))
      g_error ("\"%s\": %s", g->in, error->message);
    g_assert_no_error (error);
    g_assert_cmpstr (a.host, ==, g->host);
    g_assert_cmpstr (a.port, ==, g->port);
    if (g->socket) {
      size_t len = g->socket_len ? g->socket_len : strlen (g->socket);
      g_assert_nonnull (a.socket_path);
      g_assert_cmpuint (a.socket_len, ==, len);
      g_assert_cmpmem (a.socket_path, len, g->socket, len);
    }
    else
      g_assert_null (a.socket_path);
    g_assert_cmpstr (a.export_name, ==, g->export);
    g_assert_cmpint (a.tls, ==, g->tls);
    if (g->describe) {
      g_autofree char *d = nbdc_address_describe (&a);
      g_assert_cmpstr (d, ==, g->describe);
    }
    /* copy is deep */
    NbdAddress b;
    nbdc_address_copy (&b, &a);
    nbdc_address_clear (&a);
    g_assert_cmpstr (b.export_name, ==, g->export);
    g_assert_cmpstr (b.host, ==, g->host);
    if (g->socket)
      g_assert_cmpmem (b.socket_path, b.socket_len, g->socket, b.socket_len);
    nbdc_address_clear (&b);
  }
}

static void
test_uri_tls_params (void)
{
  NbdAddress a = { 0 };
  g_autoptr (GError) error = NULL;
  g_assert_true (nbdc_address_parse
                 ("nbds://alice@h:99/e?tls-type=psk&tls-psk-file=/k%20f"
                  "&tls-hostname=srv&tls-verify-peer=0"
                  "&tls-certificates=/pki&x-whatever", &a, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (a.tls_username, ==, "alice");
  g_assert_cmpstr (a.tls_type, ==, "psk");
  g_assert_cmpstr (a.tls_psk_file, ==, "/k f");
  g_assert_cmpstr (a.tls_hostname, ==, "srv");
  g_assert_cmpstr (a.tls_certificates, ==, "/pki");
  g_assert_cmpint (a.tls_verify_peer, ==, 0);
  g_assert_cmpint (a.tls, ==, NBDC_TLS_REQUIRE);
  g_assert_true (a.is_uri);
  nbdc_address_clear (&a);

  g_assert_true (nbdc_address_parse ("nbd://h?tls-username=bob", &a, &error));
  g_assert_cmpstr (a.tls_username, ==, "bob");
  g_assert_cmpint (a.tls_verify_peer, ==, -1);
  g_assert_cmpint (a.tls, ==, NBDC_TLS_DEFAULT);
  nbdc_address_clear (&a);
}

static const struct {
  const char *in;
  const char *msg;      /* substring of the message */
} bad[] = {
  { "", "empty" },
  { ":disk", "host name is missing" },
  { "host:10809", "looks like a port" },
  { "host:10809:disk", "looks like a port" },
  { "::1", "brackets" },
  { "[::1", "missing ']'" },
  { "[::1]x", "after ']'" },
  { "[notv6]:x", "not an IPv6" },
  { "bad host:x", "not a valid host" },
  { "http://h/x", "unknown URI scheme" },
  { "nbd:/h/x", "://" },
  { "nbd://", "host is missing" },
  { "nbd:///x", "host is missing" },
  { "nbd://h:0/x", "port" },
  { "nbd://h:99999/x", "port" },
  { "nbd://h:abc/x", "port" },
  { "nbd://h/x#frag", "fragment" },
  { "nbd://h/%zz", "%-escape" },
  { "nbd://h/%4", "%-escape" },
  { "nbd://h/a%00b", "NUL" },
  { "nbd://h/x?socket=/s", "only for nbd+unix" },
  { "nbd://h/x?bogus=1", "unknown URI parameter \"bogus\"" },
  { "nbd://h/x?tls-type=rot13", "tls-type" },
  { "nbd://h/x?tls-verify-peer=maybe", "tls-verify-peer" },
  { "nbd+unix:///x", "need ?socket=" },
  { "nbd+unix://host/x?socket=/s", "take no host" },
  { "nbd+unix:///?socket=", "empty" },
  { "nbd+unix:///?socket=/a%00b", "%00 only at the start" },
  { "nbd://[::1/x", "missing ']'" },
  { "nbd://a@/x", "host is missing" },
};

static void
test_bad (void)
{
  for (size_t i = 0; i < G_N_ELEMENTS (bad); i++) {
    NbdAddress a = { 0 };
    g_autoptr (GError) error = NULL;
    g_test_message ("parsing %s", bad[i].in);
    g_assert_false (nbdc_address_parse (bad[i].in, &a, &error));
    g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE);
    if (!strstr (error->message, bad[i].msg))
      g_error ("\"%s\": message \"%s\" lacks \"%s\"", bad[i].in,
               error->message, bad[i].msg);
    /* One line that says what a correct address looks like. */
    g_assert_null (strchr (error->message, '\n'));
    g_assert_nonnull (strstr (error->message, "expected"));
    g_assert_null (a.host);
    g_assert_null (a.export_name);
  }
}

static void
test_long_export (void)
{
  g_autofree char *s = g_strnfill (5000, 'x');
  s[0] = 'h';
  s[1] = ':';
  NbdAddress a = { 0 };
  g_autoptr (GError) error = NULL;
  g_assert_false (nbdc_address_parse (s, &a, &error));
  g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_USAGE);
  g_assert_nonnull (strstr (error->message, "4096"));
  g_assert_null (strchr (error->message, '\n'));
}

/* nbdc_address_to_uri is the one NBD URI formatter: whatever the parser
 * accepts, formatted and parsed again, names the same server and export. */
static void
test_uri_round_trip (void)
{
  static const char *const cases[] = {
    "localhost", "host:disk", "example.com:a:b", "10.0.0.1:/dev/sda",
    "[::1]:disk", "[fe80::1%eth0]:x",
    "nbd://example.com:2000/x/y", "nbd://example.com//disk",
    "nbd://h/hello%20world", "nbd://h/%e2%82%ac", "nbd://h/a%3Fb%23c%25d",
    "nbd://h/a&b=c;d+e", "nbds://example.com/x",
    "/run/nbd.sock", "/run/nbd.sock:disk", "./rel/sock:e",
    "nbd+unix:///a%20b?socket=/tmp/s",
    "nbd+unix://?socket=%2Ftmp%2Fs%20p%26q%3Dr",
    "nbds+unix:///e?socket=/s",
    "nbd+unix:///?socket=%00/abstract",
    "nbd+unix:///exp?socket=%00abs%20name",
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    for (int tls = 0; tls <= 1; tls++) {
      NbdAddress a = { 0 }, b = { 0 };
      g_autoptr (GError) error = NULL;
      g_assert_true (nbdc_address_parse (cases[i], &a, &error));
      g_autofree char *uri = nbdc_address_to_uri (&a, tls);
      g_test_message ("%s -> %s", cases[i], uri);
      if (!nbdc_address_parse (uri, &b, &error))
        g_error ("\"%s\" formatted as \"%s\": %s", cases[i], uri,
                 error->message);
      g_assert_cmpstr (b.host, ==, a.host);
      if (a.host)
        g_assert_cmpstr (b.port, ==, a.port);
      g_assert_cmpstr (b.export_name, ==, a.export_name);
      g_assert_cmpint (b.tls, ==, tls ? NBDC_TLS_REQUIRE : NBDC_TLS_DEFAULT);
      g_assert_cmpint (!!b.socket_path, ==, !!a.socket_path);
      if (a.socket_path) {
        size_t la = a.socket_len ? a.socket_len : strlen (a.socket_path);
        size_t lb = b.socket_len ? b.socket_len : strlen (b.socket_path);
        g_assert_cmpmem (b.socket_path, lb, a.socket_path, la);
      }
      nbdc_address_clear (&a);
      nbdc_address_clear (&b);
    }
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/nbdclient/address/good", test_good);
  g_test_add_func ("/nbdclient/address/uri-tls-params", test_uri_tls_params);
  g_test_add_func ("/nbdclient/address/bad", test_bad);
  g_test_add_func ("/nbdclient/address/long-export", test_long_export);
  g_test_add_func ("/nbdclient/address/uri-round-trip", test_uri_round_trip);
  return g_test_run ();
}
