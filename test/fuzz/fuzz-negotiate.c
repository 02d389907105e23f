/* libFuzzer target: the handshake (negotiate.c, opt-*.c, option.c,
 * list.c) against a server whose every byte is the fuzz input.
 *
 * Byte 0 picks what the client does (so one corpus covers every path):
 *   bits 0-1  TLS mode: 0 OFF, 1 ALLOW, 2 REQUIRE (anonymous), 3 OFF
 *   bit 2     no_structured        bit 3  no_meta
 *   bits 4-5  0, 3: nbdc_negotiate on a socketpair
 *             1: nbdc_list_exports   2: nbdc_query_info (over a Unix
 *             socket: those two connect by address)
 *   bit 6     export name "disk" instead of the default ""
 *   bit 7     no_extended (never ask for NBD_OPT_EXTENDED_HEADERS)
 * The rest is what the server sends; then it half-closes, so every run
 * ends at EOF at the latest. Invariants: no crash, leak, overflow or
 * hang; on success the export obeys negotiate.h (size <= INT64_MAX, block
 * sizes validated) and server text is escaped; on failure there is an
 * error with a printable message and nothing left to free.
 */
#include <stdio.h>
#include <sys/un.h>
#include "test/fuzz/fuzz-common.h"
#include "nbdclient/negotiate.h"

static int listen_fd = -1;
static char abstract_name[64];

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_init_logging ();
  /* Exercise the debug traces too (they print server values). */
  g_setenv ("G_MESSAGES_DEBUG", "all", TRUE);

  /* A Linux abstract socket: nothing on disk to clean up. */
  snprintf (abstract_name + 1, sizeof abstract_name - 1,
            "nbdfs-fuzz-negotiate-%d", (int) getpid ());
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  size_t len = 1 + strlen (abstract_name + 1);
  memcpy (sun.sun_path, abstract_name, len);
  listen_fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd < 0
      || bind (listen_fd, (struct sockaddr *) &sun,
               offsetof (struct sockaddr_un, sun_path) + len) < 0
      || listen (listen_fd, 4) < 0) {
    perror ("fuzz-negotiate: listen");
    abort ();
  }
  return 0;
}

static gboolean
is_pow2 (uint32_t x)
{
  return x && !(x & (x - 1));
}

static void
check_export (const NbdExport *exp)
{
  if (g_getenv ("NBDFS_FUZZ_VERBOSE"))
    fprintf (stderr, "fuzz-negotiate: ok: size %" G_GUINT64_FORMAT
             " flags 0x%x structured %d base:allocation %d (id %u) "
             "blocks %u/%u/%u\n", (guint64) exp->size, exp->eflags,
             exp->structured, exp->base_allocation, exp->base_allocation_id,
             exp->min_block, exp->pref_block, exp->max_block);
  FUZZ_CHECK (exp->size <= INT64_MAX);
  FUZZ_CHECK (is_pow2 (exp->min_block) && is_pow2 (exp->pref_block));
  FUZZ_CHECK (exp->min_block <= exp->pref_block);
  FUZZ_CHECK (exp->min_block <= exp->max_block);
  FUZZ_CHECK (exp->max_block % exp->min_block == 0);
  FUZZ_CHECK (exp->name != NULL);
  fuzz_check_printable (exp->canonical_name);
  fuzz_check_printable (exp->description);
  if (exp->base_allocation)
    FUZZ_CHECK (exp->structured);
}

static void
check_error (GError *err)
{
  FUZZ_CHECK (err != NULL && err->message != NULL && err->message[0]);
  if (g_getenv ("NBDFS_FUZZ_VERBOSE"))
    fprintf (stderr, "fuzz-negotiate: error: %s\n", err->message);
  fuzz_check_printable (err->message);
  g_error_free (err);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  uint8_t mode = data[0];
  NbdcOptions opts = { 0 };
  switch (mode & 3) {
  case 1: opts.tls = NBDC_TLS_ALLOW; break;
  case 2: opts.tls = NBDC_TLS_REQUIRE; break;
  default: opts.tls = NBDC_TLS_OFF; break;
  }
  opts.tls_config.type = g_strdup ("anon");
  opts.no_structured = !!(mode & 4);
  opts.no_meta = !!(mode & 8);
  opts.no_extended = !!(mode & 0x80);
  opts.handshake_timeout = 5;
  opts.addr.export_name = g_strdup (mode & 0x40 ? "disk" : "");
  int entry = (mode >> 4) & 3;

  FuzzServer srv = { .fd = -1, .listen_fd = listen_fd,
                     .data = data + 1, .size = size - 1 };
  GError *err = NULL;
  if (entry == 1 || entry == 2) {
    /* NUL-terminated after socket_len bytes, as address.c makes them. */
    opts.addr.socket_path = g_memdup2 (abstract_name,
                                       2 + strlen (abstract_name + 1));
    opts.addr.socket_len = 1 + strlen (abstract_name + 1);
    fuzz_server_start (&srv);
    if (entry == 1) {
      GPtrArray *entries = NULL;
      if (nbdc_list_exports (&opts, &entries, &err)) {
        FUZZ_CHECK (entries != NULL && err == NULL);
        for (guint i = 0; i < entries->len; i++) {
          NbdExportEntry *e = entries->pdata[i];
          FUZZ_CHECK (e->name && e->description);
          fuzz_check_printable (e->name);
          fuzz_check_printable (e->description);
        }
        g_ptr_array_unref (entries);
      }
      else {
        FUZZ_CHECK (entries == NULL);
        check_error (err);
      }
    }
    else {
      NbdExport exp = { 0 };
      GPtrArray *contexts = NULL;
      if (nbdc_query_info (&opts, &exp, &contexts, &err)) {
        FUZZ_CHECK (contexts != NULL && err == NULL);
        check_export (&exp);
        for (guint i = 0; i < contexts->len; i++)
          fuzz_check_printable (contexts->pdata[i]);
        g_ptr_array_unref (contexts);
      }
      else {
        FUZZ_CHECK (contexts == NULL);
        FUZZ_CHECK (exp.name == NULL && exp.canonical_name == NULL
                    && exp.description == NULL);
        check_error (err);
      }
      nbdc_export_clear (&exp);
    }
  }
  else {
    int sv[2];
    if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
      abort ();
    srv.fd = sv[1];
    fuzz_server_start (&srv);
    NbdExport exp = { 0 };
    gint64 deadline = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;
    NbdTransport *t = nbdc_negotiate (sv[0], &opts, &exp, deadline, &err);
    if (t) {
      FUZZ_CHECK (err == NULL);
      check_export (&exp);
      nbdc_transport_free (t);
    }
    else {
      /* "nothing to free" */
      FUZZ_CHECK (exp.name == NULL && exp.canonical_name == NULL
                  && exp.description == NULL);
      check_error (err);
    }
    nbdc_export_clear (&exp);
  }
  fuzz_server_join (&srv);
  nbdc_options_clear (&opts);
  return 0;
}
