/* Unit tests: the negotiator (nbdc_negotiate) against a scripted server on
 * a socketpair(): a thread plays the server byte by byte, checking what
 * the client sends. Covers the handshake styles, OPT_GO and its fallback,
 * every refusal we word specially, and a hostile server (short reads, bad
 * magic, wrong option echoed, huge lengths, bad sizes, silence). */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "nbdclient/error.h"
#include "nbdclient/negotiate.h"
#include "nbdclient/protocol.h"

/* ---- the scripted peer ---- */

typedef enum {
  OP_SEND,        /* write bytes */
  OP_EXPECT,      /* read len bytes, must equal bytes */
  OP_OPTION,      /* read an option header with this number + its data;
                     if bytes is set, the data must equal it */
  OP_CLOSE,       /* close now */
  OP_WAIT_EOF,    /* read until the client hangs up (silent server) */
} OpType;

typedef struct {
  OpType type;
  uint32_t opt;
  GBytes *bytes;
} Op;

typedef struct {
  int fd;
  GArray *ops;
  char *failure;            /* first thing that went wrong, or NULL */
  guint done;               /* ops completed */
  pthread_t thread;
  int listen_fd;            /* >= 0: accept one connection first */
} Peer;

static Peer *
peer_new (void)
{
  Peer *p = g_new0 (Peer, 1);
  p->ops = g_array_new (FALSE, TRUE, sizeof (Op));
  p->fd = -1;
  p->listen_fd = -1;
  return p;
}

static void
peer_op (Peer *p, OpType type, uint32_t opt, const void *data, size_t len)
{
  Op op = { type, opt, data ? g_bytes_new (data, len) : NULL };
  g_array_append_val (p->ops, op);
}

static void
send_bytes (Peer *p, const void *data, size_t len)
{
  peer_op (p, OP_SEND, 0, data, len);
}

static void
put_be16 (GByteArray *b, uint16_t v)
{
  v = GUINT16_TO_BE (v);
  g_byte_array_append (b, (guint8 *) &v, 2);
}

static void
put_be32 (GByteArray *b, uint32_t v)
{
  v = GUINT32_TO_BE (v);
  g_byte_array_append (b, (guint8 *) &v, 4);
}

static void
put_be64 (GByteArray *b, uint64_t v)
{
  v = GUINT64_TO_BE (v);
  g_byte_array_append (b, (guint8 *) &v, 8);
}

/* Server greeting, newstyle, and the client flags we expect back. */
static void
newstyle (Peer *p, uint16_t gflags, uint32_t expect_cflags)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be64 (b, NBD_INIT_PASSWD);
  put_be64 (b, NBD_NEWSTYLE_MAGIC);
  put_be16 (b, gflags);
  send_bytes (p, b->data, b->len);
  uint32_t c = GUINT32_TO_BE (expect_cflags);
  peer_op (p, OP_EXPECT, 0, &c, 4);
}

static void
fixed (Peer *p)
{
  newstyle (p, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES,
            NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
}

static void
expect_option (Peer *p, uint32_t opt)
{
  peer_op (p, OP_OPTION, opt, NULL, 0);
}

static void
reply_full (Peer *p, uint64_t magic, uint32_t opt, uint32_t type,
            uint32_t claimed_len, const void *data, size_t len)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be64 (b, magic);
  put_be32 (b, opt);
  put_be32 (b, type);
  put_be32 (b, claimed_len);
  if (len)
    g_byte_array_append (b, data, len);
  send_bytes (p, b->data, b->len);
}

static void
reply (Peer *p, uint32_t opt, uint32_t type, const void *data, size_t len)
{
  reply_full (p, NBD_OPT_REPLY_MAGIC, opt, type, len, data, len);
}

static void
reply_str (Peer *p, uint32_t opt, uint32_t type, const char *s)
{
  reply (p, opt, type, s, s ? strlen (s) : 0);
}

static void
info_export (Peer *p, uint32_t opt, uint64_t size, uint16_t eflags)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be16 (b, NBD_INFO_EXPORT);
  put_be64 (b, size);
  put_be16 (b, eflags);
  reply (p, opt, NBD_REP_INFO, b->data, b->len);
}

static void
info_block_size (Peer *p, uint32_t opt, uint32_t min, uint32_t pref,
                 uint32_t max)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be16 (b, NBD_INFO_BLOCK_SIZE);
  put_be32 (b, min);
  put_be32 (b, pref);
  put_be32 (b, max);
  reply (p, opt, NBD_REP_INFO, b->data, b->len);
}

static void
info_string (Peer *p, uint32_t opt, uint16_t type, const char *s)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be16 (b, type);
  g_byte_array_append (b, (const guint8 *) s, strlen (s));
  reply (p, opt, NBD_REP_INFO, b->data, b->len);
}

static void
meta_context (Peer *p, uint32_t opt, uint32_t id, const char *name)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be32 (b, id);
  g_byte_array_append (b, (const guint8 *) name, strlen (name));
  reply (p, opt, NBD_REP_META_CONTEXT, b->data, b->len);
}

static void
server_entry (Peer *p, const char *name, const char *desc)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be32 (b, strlen (name));
  g_byte_array_append (b, (const guint8 *) name, strlen (name));
  g_byte_array_append (b, (const guint8 *) desc, strlen (desc));
  reply (p, NBD_OPT_LIST, NBD_REP_SERVER, b->data, b->len);
}

/* A server without extended headers (nbdkit 1.32, qemu 7.2): the option
 * we try first is refused, so structured replies come next. */
static void
no_ext (Peer *p)
{
  expect_option (p, NBD_OPT_EXTENDED_HEADERS);
  reply (p, NBD_OPT_EXTENDED_HEADERS, NBD_REP_ERR_UNSUP, NULL, 0);
}

/* The usual prelude after fixed newstyle: structured replies acked and
 * base:allocation selected with id 7. */
static void
sr_and_meta (Peer *p)
{
  no_ext (p);
  expect_option (p, NBD_OPT_STRUCTURED_REPLY);
  reply (p, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_SET_META_CONTEXT);
  meta_context (p, NBD_OPT_SET_META_CONTEXT, 7, "base:allocation");
  reply (p, NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, NULL, 0);
}

static gboolean
read_exact (int fd, void *buf, size_t len)
{
  char *q = buf;
  while (len) {
    ssize_t r = read (fd, q, len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return FALSE;
    q += r;
    len -= r;
  }
  return TRUE;
}

static void *
peer_thread (void *arg)
{
  Peer *p = arg;
  if (p->listen_fd >= 0) {
    p->fd = accept (p->listen_fd, NULL, NULL);
    close (p->listen_fd);
    if (p->fd < 0) {
      p->failure = g_strdup_printf ("accept: %s", g_strerror (errno));
      return NULL;
    }
  }
  for (guint i = 0; i < p->ops->len && !p->failure; i++) {
    Op *op = &g_array_index (p->ops, Op, i);
    gsize len = 0;
    const guint8 *data = op->bytes ? g_bytes_get_data (op->bytes, &len)
      : NULL;
    switch (op->type) {
    case OP_SEND: {
      gsize off = 0;
      while (off < len) {
        ssize_t r = send (p->fd, data + off, len - off, MSG_NOSIGNAL);
        if (r < 0) {
          p->failure = g_strdup_printf ("op %u: send: %s", i,
                                        g_strerror (errno));
          break;
        }
        off += r;
      }
      break;
    }
    case OP_EXPECT: {
      g_autofree guint8 *buf = g_malloc (len);
      if (!read_exact (p->fd, buf, len))
        p->failure = g_strdup_printf ("op %u: client closed early", i);
      else if (memcmp (buf, data, len) != 0)
        p->failure = g_strdup_printf ("op %u: client sent other bytes", i);
      break;
    }
    case OP_OPTION: {
      struct nbd_new_option h;
      if (!read_exact (p->fd, &h, sizeof h)) {
        p->failure = g_strdup_printf ("op %u: client closed before "
                                      "option %u", i, op->opt);
        break;
      }
      uint32_t opt = GUINT32_FROM_BE (h.option);
      uint32_t olen = GUINT32_FROM_BE (h.optlen);
      if (GUINT64_FROM_BE (h.version) != NBD_NEWSTYLE_MAGIC || opt != op->opt
          || olen > 65536) {
        p->failure = g_strdup_printf ("op %u: expected option %u, got %u "
                                      "(len %u)", i, op->opt, opt, olen);
        break;
      }
      g_autofree guint8 *buf = g_malloc (olen + 1);
      if (!read_exact (p->fd, buf, olen))
        p->failure = g_strdup_printf ("op %u: short option data", i);
      else if (data && (olen != len || memcmp (buf, data, len) != 0))
        p->failure = g_strdup_printf ("op %u: unexpected option data", i);
      break;
    }
    case OP_CLOSE:
      shutdown (p->fd, SHUT_RDWR);
      break;
    case OP_WAIT_EOF: {
      char c;
      while (read (p->fd, &c, 1) > 0)
        ;
      break;
    }
    }
    if (!p->failure)
      p->done = i + 1;
  }
  close (p->fd);
  return NULL;
}

/* Starts the peer; returns the client's end. */
static int
peer_start (Peer *p)
{
  int sv[2];
  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
                   ==, 0);
  p->fd = sv[1];
  g_assert_cmpint (pthread_create (&p->thread, NULL, peer_thread, p), ==, 0);
  return sv[0];
}

/* Starts the peer listening on a Unix socket at path (for the calls that
 * connect by themselves: nbdc_list_exports, nbdc_query_info). */
static void
peer_listen (Peer *p, const char *path)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  g_assert_cmpuint (strlen (path), <, sizeof sun.sun_path);
  strcpy (sun.sun_path, path);
  p->listen_fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint (p->listen_fd, >=, 0);
  g_assert_cmpint (bind (p->listen_fd, (struct sockaddr *) &sun, sizeof sun),
                   ==, 0);
  g_assert_cmpint (listen (p->listen_fd, 1), ==, 0);
  g_assert_cmpint (pthread_create (&p->thread, NULL, peer_thread, p), ==, 0);
}

/* Joins; asserts the whole script ran unless partial_ok. */
static void
peer_finish (Peer *p, gboolean partial_ok)
{
  pthread_join (p->thread, NULL);
  if (p->failure)
    g_error ("scripted server: %s", p->failure);
  if (!partial_ok)
    g_assert_cmpuint (p->done, ==, p->ops->len);
  for (guint i = 0; i < p->ops->len; i++) {
    Op *op = &g_array_index (p->ops, Op, i);
    if (op->bytes)
      g_bytes_unref (op->bytes);
  }
  g_array_unref (p->ops);
  g_free (p);
}

typedef struct {
  NbdcOptions opts;
  NbdExport exp;
  GError *error;
  gboolean ok;
} Result;

static void
result_clear (Result *r)
{
  nbdc_options_clear (&r->opts);
  nbdc_export_clear (&r->exp);
  g_clear_error (&r->error);
}

/* Runs the negotiator against the script with a 5 s deadline. */
static void
run (Peer *p, Result *r, const char *export, NbdcTlsMode tls,
     gboolean partial_ok)
{
  memset (r, 0, sizeof *r);
  r->opts.addr.export_name = g_strdup (export);
  r->opts.addr.socket_path = g_strdup ("/scripted");
  r->opts.tls = tls ? tls : NBDC_TLS_OFF;
  int fd = peer_start (p);
  NbdTransport *t = nbdc_negotiate (fd, &r->opts, &r->exp,
                                    g_get_monotonic_time ()
                                    + 5 * G_USEC_PER_SEC, &r->error);
  r->ok = t != NULL;
  if (t) {
    g_assert_no_error (r->error);
    /* Hang up so a peer waiting for more sees EOF. */
    nbdc_transport_free (t);
  }
  else {
    g_assert_nonnull (r->error);
    g_test_message ("error: %s", r->error->message);
    g_assert_null (strchr (r->error->message, '\n'));
  }
  peer_finish (p, partial_ok);
}

static void
assert_error (Result *r, int code, const char *substr)
{
  g_assert_false (r->ok);
  g_assert_error (r->error, NBDFS_ERROR, code);
  if (substr && !strstr (r->error->message, substr))
    g_error ("message \"%s\" lacks \"%s\"", r->error->message, substr);
}

/* ---- the cases ---- */

static void
test_oldstyle (void)
{
  Peer *p = peer_new ();
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be64 (b, NBD_INIT_PASSWD);
  put_be64 (b, NBD_OLDSTYLE_MAGIC);
  put_be64 (b, 1 << 20);
  put_be32 (b, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY);
  g_byte_array_set_size (b, b->len + 124);
  memset (b->data + b->len - 124, 0, 124);
  send_bytes (p, b->data, b->len);
  Result r;
  run (p, &r, "", 0, FALSE);
  g_assert_true (r.ok);
  g_assert_cmpuint (r.exp.size, ==, 1 << 20);
  g_assert_cmpuint (r.exp.eflags, ==, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY);
  g_assert_cmpint (r.exp.style, ==, NBDC_STYLE_OLDSTYLE);
  g_assert_cmpuint (r.exp.min_block, ==, 1);
  g_assert_cmpuint (r.exp.pref_block, ==, 4096);
  g_assert_cmpuint (r.exp.max_block, ==, 32 << 20);
  g_assert_false (r.exp.block_size_from_server);
  g_assert_false (r.exp.structured);
  result_clear (&r);

  /* Oldstyle has no export names: asking for one is an error. */
  p = peer_new ();
  send_bytes (p, b->data, b->len);
  run (p, &r, "disk", 0, TRUE);
  assert_error (&r, NBDFS_ERROR_UNSUPPORTED, "oldstyle");
  result_clear (&r);
}

static void
test_oldstyle_tls_required (void)
{
  Peer *p = peer_new ();
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be64 (b, NBD_INIT_PASSWD);
  put_be64 (b, NBD_OLDSTYLE_MAGIC);
  put_be64 (b, 1 << 20);
  put_be32 (b, NBD_FLAG_HAS_FLAGS);
  g_byte_array_set_size (b, b->len + 124);
  memset (b->data + b->len - 124, 0, 124);
  send_bytes (p, b->data, b->len);
  Result r;
  run (p, &r, "", NBDC_TLS_REQUIRE, TRUE);
  assert_error (&r, NBDFS_ERROR_TLS_REQUIRED, "oldstyle");
  result_clear (&r);

  /* An nbds:// address requires TLS even if the caller left opts->tls
   * at DEFAULT. */
  p = peer_new ();
  send_bytes (p, b->data, b->len);
  memset (&r, 0, sizeof r);
  r.opts.addr.export_name = g_strdup ("");
  r.opts.addr.tls = NBDC_TLS_REQUIRE;
  r.opts.tls = NBDC_TLS_DEFAULT;
  int fd = peer_start (p);
  NbdTransport *t = nbdc_negotiate (fd, &r.opts, &r.exp, 0, &r.error);
  g_assert_null (t);
  g_assert_error (r.error, NBDFS_ERROR, NBDFS_ERROR_TLS_REQUIRED);
  peer_finish (p, TRUE);
  result_clear (&r);
}

static void
export_name_reply (Peer *p, uint64_t size, uint16_t eflags, gboolean zeroes)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be64 (b, size);
  put_be16 (b, eflags);
  if (zeroes) {
    g_byte_array_set_size (b, b->len + 124);
    memset (b->data + 10, 0, 124);
  }
  send_bytes (p, b->data, b->len);
}

static void
test_newstyle (void)
{
  /* Not fixed: no flags from us, EXPORT_NAME at once, 124 zeroes. */
  Peer *p = peer_new ();
  newstyle (p, 0, 0);
  peer_op (p, OP_OPTION, NBD_OPT_EXPORT_NAME, "disk", 4);
  export_name_reply (p, 12345, NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH, TRUE);
  Result r;
  run (p, &r, "disk", 0, FALSE);
  g_assert_true (r.ok);
  g_assert_cmpint (r.exp.style, ==, NBDC_STYLE_NEWSTYLE);
  g_assert_cmpuint (r.exp.size, ==, 12345);
  g_assert_cmpuint (r.exp.eflags, ==, NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH);
  g_assert_true (r.exp.used_export_name);
  g_assert_false (r.exp.no_zeroes);
  result_clear (&r);

  /* TLS required: plain newstyle cannot do STARTTLS -> refuse. */
  p = peer_new ();
  newstyle (p, 0, 0);
  run (p, &r, "disk", NBDC_TLS_REQUIRE, TRUE);
  assert_error (&r, NBDFS_ERROR_TLS_REQUIRED, "fixed newstyle");
  result_clear (&r);
}

static void
test_newstyle_no_zeroes_export_closed (void)
{
  /* Fixed newstyle without NO_ZEROES, GO unsupported, EXPORT_NAME: the
   * server hangs up (unknown export) -> a message naming the export. */
  Peer *p = peer_new ();
  newstyle (p, NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_C_FIXED_NEWSTYLE);
  no_ext (p);
  expect_option (p, NBD_OPT_STRUCTURED_REPLY);
  reply (p, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_UNSUP, NULL, 0);
  expect_option (p, NBD_OPT_GO);
  reply (p, NBD_OPT_GO, NBD_REP_ERR_UNSUP, NULL, 0);
  peer_op (p, OP_OPTION, NBD_OPT_EXPORT_NAME, "nope", 4);
  peer_op (p, OP_CLOSE, 0, NULL, 0);
  Result r;
  run (p, &r, "nope", 0, FALSE);
  assert_error (&r, NBDFS_ERROR_NO_SUCH_EXPORT, "\"nope\"");
  result_clear (&r);
}

static void
test_go_success (void)
{
  Peer *p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  info_string (p, NBD_OPT_GO, NBD_INFO_NAME, "canon");
  info_block_size (p, NBD_OPT_GO, 512, 4096, 1 << 20);
  info_export (p, NBD_OPT_GO, 1 << 30,
               NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_TRIM
               | NBD_FLAG_CAN_MULTI_CONN);
  info_string (p, NBD_OPT_GO, NBD_INFO_DESCRIPTION, "a \x1b disk");
  reply (p, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
  Result r;
  run (p, &r, "disk", 0, FALSE);
  g_assert_true (r.ok);
  g_assert_cmpint (r.exp.style, ==, NBDC_STYLE_FIXED_NEWSTYLE);
  g_assert_true (r.exp.no_zeroes);
  g_assert_true (r.exp.structured);
  g_assert_true (r.exp.base_allocation);
  g_assert_cmpuint (r.exp.base_allocation_id, ==, 7);
  g_assert_cmpuint (r.exp.size, ==, 1 << 30);
  g_assert_cmpuint (r.exp.eflags, ==, NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_TRIM
                    | NBD_FLAG_CAN_MULTI_CONN);
  g_assert_cmpuint (r.exp.min_block, ==, 512);
  g_assert_cmpuint (r.exp.pref_block, ==, 4096);
  g_assert_cmpuint (r.exp.max_block, ==, 1 << 20);
  g_assert_true (r.exp.block_size_from_server);
  g_assert_false (r.exp.used_export_name);
  g_assert_cmpstr (r.exp.name, ==, "disk");
  g_assert_cmpstr (r.exp.canonical_name, ==, "canon");
  g_assert_cmpstr (r.exp.description, ==, "a \\x1b disk");
  result_clear (&r);
}

static void
test_go_request_bytes (void)
{
  /* The GO request carries the name and our four info requests. */
  Peer *p = peer_new ();
  fixed (p);
  no_ext (p);
  expect_option (p, NBD_OPT_STRUCTURED_REPLY);
  reply (p, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_UNSUP, NULL, 0);
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be32 (b, 2);
  g_byte_array_append (b, (const guint8 *) "ab", 2);
  put_be16 (b, 4);
  put_be16 (b, NBD_INFO_EXPORT);
  put_be16 (b, NBD_INFO_NAME);
  put_be16 (b, NBD_INFO_DESCRIPTION);
  put_be16 (b, NBD_INFO_BLOCK_SIZE);
  peer_op (p, OP_OPTION, NBD_OPT_GO, b->data, b->len);
  info_export (p, NBD_OPT_GO, 4096, NBD_FLAG_HAS_FLAGS);
  reply (p, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
  Result r;
  run (p, &r, "ab", 0, FALSE);
  g_assert_true (r.ok);
  /* No structured replies -> no meta context was asked for. */
  g_assert_false (r.exp.structured);
  g_assert_false (r.exp.base_allocation);
  g_assert_false (r.exp.block_size_from_server);
  result_clear (&r);
}

static void
test_go_unsup_fallback (void)
{
  Peer *p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  reply_str (p, NBD_OPT_GO, NBD_REP_ERR_UNSUP, "what is GO?");
  peer_op (p, OP_OPTION, NBD_OPT_EXPORT_NAME, "disk", 4);
  /* NO_ZEROES negotiated: just size and flags. */
  export_name_reply (p, 8192, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY, FALSE);
  Result r;
  run (p, &r, "disk", 0, FALSE);
  g_assert_true (r.ok);
  g_assert_true (r.exp.used_export_name);
  g_assert_cmpuint (r.exp.size, ==, 8192);
  g_assert_cmpuint (r.exp.eflags, ==, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY);
  result_clear (&r);
}

static void
test_go_unknown_lists_exports (void)
{
  Peer *p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  reply_str (p, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, "no such export");
  expect_option (p, NBD_OPT_LIST);
  server_entry (p, "alpha", "");
  server_entry (p, "beta", "the second one");
  reply (p, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_ABORT);
  reply (p, NBD_OPT_ABORT, NBD_REP_ACK, NULL, 0);
  Result r;
  run (p, &r, "gamma", 0, FALSE);
  assert_error (&r, NBDFS_ERROR_NO_SUCH_EXPORT, "\"gamma\"");
  g_assert_nonnull (strstr (r.error->message,
                            "server reported: no such export"));
  g_assert_nonnull (strstr (r.error->message, "\"alpha\", \"beta\""));
  result_clear (&r);

  /* LIST refused: the message still names the export. */
  p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  reply (p, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, NULL, 0);
  expect_option (p, NBD_OPT_LIST);
  reply (p, NBD_OPT_LIST, NBD_REP_ERR_POLICY, NULL, 0);
  expect_option (p, NBD_OPT_ABORT);
  peer_op (p, OP_CLOSE, 0, NULL, 0);    /* no ack to ABORT: also fine */
  run (p, &r, "gamma", 0, FALSE);
  assert_error (&r, NBDFS_ERROR_NO_SUCH_EXPORT, "no export named \"gamma\"");
  g_assert_null (strstr (r.error->message, "exports on the server"));
  result_clear (&r);
}

static void
go_refused (uint32_t rep, const char *text, int code, const char *substr)
{
  Peer *p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  reply_str (p, NBD_OPT_GO, rep, text);
  expect_option (p, NBD_OPT_ABORT);
  reply (p, NBD_OPT_ABORT, NBD_REP_ACK, NULL, 0);
  Result r;
  run (p, &r, "disk", 0, FALSE);
  assert_error (&r, code, substr);
  if (text) {
    g_autofree char *want = g_strdup_printf ("server reported: %s", text);
    g_assert_nonnull (strstr (r.error->message, want));
  }
  result_clear (&r);
}

static void
test_go_refusals (void)
{
  go_refused (NBD_REP_ERR_POLICY, "go away", NBDFS_ERROR_REFUSED,
              "policy does not allow access to export \"disk\"");
  go_refused (NBD_REP_ERR_TLS_REQD, NULL, NBDFS_ERROR_TLS_REQUIRED,
              "requires TLS: use nbds:// or --tls=require");
  go_refused (NBD_REP_ERR_TLS_REQD, "TLS first", NBDFS_ERROR_TLS_REQUIRED,
              "nbds://");
  go_refused (NBD_REP_ERR_SHUTDOWN, "bye", NBDFS_ERROR_REFUSED,
              "shutting down");
  go_refused (NBD_REP_ERR_INVALID, NULL, NBDFS_ERROR_REFUSED, "invalid");
  go_refused (NBD_REP_ERR_PLATFORM, NULL, NBDFS_ERROR_UNSUPPORTED,
              "platform");
  go_refused (NBD_REP_ERR_BLOCK_SIZE_REQD, NULL, NBDFS_ERROR_REFUSED,
              "block size");
  go_refused (NBD_REP_FLAG_ERROR | 99, "odd", NBDFS_ERROR_REFUSED,
              "unknown error 0x80000063");
}

static void
test_escaped_server_text (void)
{
  Peer *p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  reply_str (p, NBD_OPT_GO, NBD_REP_ERR_POLICY, "x\n\x1b[2Jy");
  expect_option (p, NBD_OPT_ABORT);
  reply (p, NBD_OPT_ABORT, NBD_REP_ACK, NULL, 0);
  Result r;
  run (p, &r, "disk", 0, FALSE);
  assert_error (&r, NBDFS_ERROR_REFUSED, "server reported: x\\n\\x1b[2Jy");
  result_clear (&r);
}

/* Hostile replies: each must end with a PROTOCOL error naming the fault. */
static void
test_short_read (void)
{
  /* Peer closes in the middle of an option reply header. */
  Peer *p = peer_new ();
  fixed (p);
  no_ext (p);
  expect_option (p, NBD_OPT_STRUCTURED_REPLY);
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be64 (b, NBD_OPT_REPLY_MAGIC);
  put_be32 (b, NBD_OPT_STRUCTURED_REPLY);
  send_bytes (p, b->data, b->len);
  peer_op (p, OP_CLOSE, 0, NULL, 0);
  Result r;
  run (p, &r, "", 0, FALSE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL, "server closed the connection "
                "while reading the reply to option 8 (structured reply)");
  result_clear (&r);

  /* ... and in the middle of a payload. */
  p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  reply_full (p, NBD_OPT_REPLY_MAGIC, NBD_OPT_GO, NBD_REP_INFO, 12,
              "\0\0\0\0", 4);
  peer_op (p, OP_CLOSE, 0, NULL, 0);
  run (p, &r, "", 0, FALSE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL, "server closed the connection");
  result_clear (&r);

  /* ... and in the greeting. */
  p = peer_new ();
  send_bytes (p, "NBDMAG", 6);
  peer_op (p, OP_CLOSE, 0, NULL, 0);
  run (p, &r, "", 0, FALSE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL, "greeting");
  result_clear (&r);
}

static void
test_bad_magic (void)
{
  Peer *p = peer_new ();
  send_bytes (p, "HTTP/1.1 400 Bad Request\r\n", 26);
  Result r;
  run (p, &r, "", 0, TRUE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL, "not an NBD server");
  result_clear (&r);

  /* NBDMAGIC then neither oldstyle nor IHAVEOPT. */
  p = peer_new ();
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be64 (b, NBD_INIT_PASSWD);
  put_be64 (b, 0x1234);
  send_bytes (p, b->data, b->len);
  run (p, &r, "", 0, TRUE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL, "bad handshake magic");
  result_clear (&r);

  /* Bad option reply magic. */
  p = peer_new ();
  fixed (p);
  no_ext (p);
  expect_option (p, NBD_OPT_STRUCTURED_REPLY);
  reply_full (p, 0xdeadbeef, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, 0,
              NULL, 0);
  run (p, &r, "", 0, TRUE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL, "bad option reply magic");
  result_clear (&r);
}

static void
test_wrong_option_echoed (void)
{
  Peer *p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  info_export (p, NBD_OPT_INFO, 4096, NBD_FLAG_HAS_FLAGS);
  Result r;
  run (p, &r, "", 0, TRUE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL,
                "answered option 7 (go) with a reply for option 6 (info)");
  result_clear (&r);
}

static void
test_oversized_reply (void)
{
  /* Claims 2 GiB of payload: refused before reading or allocating. */
  Peer *p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  reply_full (p, NBD_OPT_REPLY_MAGIC, NBD_OPT_GO, NBD_REP_INFO, 0x80000000,
              NULL, 0);
  Result r;
  run (p, &r, "", 0, TRUE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL, "2147483648 bytes long");
  result_clear (&r);

  /* A meta context name longer than NBD_MAX_STRING. */
  p = peer_new ();
  fixed (p);
  no_ext (p);
  expect_option (p, NBD_OPT_STRUCTURED_REPLY);
  reply (p, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_SET_META_CONTEXT);
  g_autofree char *big = g_malloc0 (8000);
  reply (p, NBD_OPT_SET_META_CONTEXT, NBD_REP_META_CONTEXT, big, 8000);
  run (p, &r, "", 0, TRUE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL, "meta context reply length 8000");
  result_clear (&r);
}

static void
test_size_too_big (void)
{
  Peer *p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  info_export (p, NBD_OPT_GO, (uint64_t) INT64_MAX + 1, NBD_FLAG_HAS_FLAGS);
  Result r;
  run (p, &r, "", 0, TRUE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL, "9223372036854775808");
  result_clear (&r);

  /* Same via EXPORT_NAME (newstyle). */
  p = peer_new ();
  newstyle (p, 0, 0);
  expect_option (p, NBD_OPT_EXPORT_NAME);
  export_name_reply (p, UINT64_MAX, NBD_FLAG_HAS_FLAGS, TRUE);
  run (p, &r, "", 0, FALSE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL, "export size");
  result_clear (&r);

  /* INT64_MAX itself is fine. */
  p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  info_export (p, NBD_OPT_GO, INT64_MAX, NBD_FLAG_HAS_FLAGS);
  reply (p, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
  run (p, &r, "", 0, FALSE);
  g_assert_true (r.ok);
  g_assert_cmpuint (r.exp.size, ==, INT64_MAX);
  result_clear (&r);
}

static void
block_sizes (uint32_t min, uint32_t pref, uint32_t max, gboolean good,
             uint32_t want_max)
{
  Peer *p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  info_export (p, NBD_OPT_GO, 1 << 20, NBD_FLAG_HAS_FLAGS);
  info_block_size (p, NBD_OPT_GO, min, pref, max);
  if (good)
    reply (p, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
  Result r;
  g_test_message ("block sizes %u/%u/%u", min, pref, max);
  run (p, &r, "", 0, !good);
  if (good) {
    g_assert_true (r.ok);
    g_assert_cmpuint (r.exp.min_block, ==, min);
    g_assert_cmpuint (r.exp.pref_block, ==, pref);
    g_assert_cmpuint (r.exp.max_block, ==, want_max);
  }
  else
    assert_error (&r, NBDFS_ERROR_PROTOCOL, "invalid block sizes");
  result_clear (&r);
}

static void
test_block_sizes (void)
{
  block_sizes (1, 4096, 32 << 20, TRUE, 32 << 20);
  block_sizes (512, 512, 512, TRUE, 512);
  block_sizes (65536, 65536, 1 << 20, TRUE, 1 << 20);
  /* "no limit": rounded down to a multiple of the minimum. */
  block_sizes (4096, 4096, 0xffffffff, TRUE, 0xfffff000);
  block_sizes (1, 4096, 0xffffffff, TRUE, 0xffffffff);
  block_sizes (0, 4096, 1 << 20, FALSE, 0);         /* min 0 */
  block_sizes (3, 4096, 1 << 20, FALSE, 0);         /* min not 2^n */
  block_sizes (131072, 131072, 1 << 20, FALSE, 0);  /* min > 64K */
  block_sizes (4096, 512, 1 << 20, FALSE, 0);       /* pref < min */
  block_sizes (1, 256, 1 << 20, FALSE, 0);          /* pref < 512 */
  block_sizes (1, 6000, 1 << 20, FALSE, 0);         /* pref not 2^n */
  block_sizes (512, 4096, 2048, FALSE, 0);          /* max < pref */
}

static void
test_unknown_info_skipped (void)
{
  Peer *p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be16 (b, 42);
  g_byte_array_append (b, (const guint8 *) "whatever!!", 10);
  reply (p, NBD_OPT_GO, NBD_REP_INFO, b->data, b->len);
  info_export (p, NBD_OPT_GO, 4096, NBD_FLAG_HAS_FLAGS);
  reply (p, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
  Result r;
  run (p, &r, "", 0, FALSE);
  g_assert_true (r.ok);
  g_assert_cmpuint (r.exp.size, ==, 4096);
  result_clear (&r);
}

static void
test_ack_without_export (void)
{
  Peer *p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  info_string (p, NBD_OPT_GO, NBD_INFO_NAME, "x");
  reply (p, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
  Result r;
  run (p, &r, "", 0, TRUE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL, "NBD_INFO_EXPORT");
  result_clear (&r);

  /* NBD_INFO_EXPORT of the wrong length. */
  p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  reply (p, NBD_OPT_GO, NBD_REP_INFO, "\0\0\0\0\0\0\0\0\0\0\0", 11);
  run (p, &r, "", 0, TRUE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL, "expected 12");
  result_clear (&r);

  /* Transmission flags without NBD_FLAG_HAS_FLAGS. */
  p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  info_export (p, NBD_OPT_GO, 4096, NBD_FLAG_READ_ONLY);
  reply (p, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
  run (p, &r, "", 0, TRUE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL, "NBD_FLAG_HAS_FLAGS");
  result_clear (&r);

  /* A reply type that makes no sense for GO. */
  p = peer_new ();
  fixed (p);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  reply (p, NBD_OPT_GO, NBD_REP_SERVER, "\0\0\0\0", 4);
  run (p, &r, "", 0, TRUE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL, "unexpected reply 0x2 (server)");
  result_clear (&r);
}

static void
test_meta_context_refused (void)
{
  /* SET_META_CONTEXT refused: carry on without base:allocation; contexts
   * sent before the error are disregarded. */
  Peer *p = peer_new ();
  fixed (p);
  no_ext (p);
  expect_option (p, NBD_OPT_STRUCTURED_REPLY);
  reply (p, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_SET_META_CONTEXT);
  meta_context (p, NBD_OPT_SET_META_CONTEXT, 3, "base:allocation");
  reply (p, NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_TOO_BIG, NULL, 0);
  expect_option (p, NBD_OPT_GO);
  info_export (p, NBD_OPT_GO, 4096, NBD_FLAG_HAS_FLAGS);
  reply (p, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
  Result r;
  run (p, &r, "", 0, FALSE);
  g_assert_true (r.ok);
  g_assert_true (r.exp.structured);
  g_assert_false (r.exp.base_allocation);
  result_clear (&r);
}

static void
test_starttls (void)
{
  /* TLS required, STARTTLS refused (maybe by a MitM): never go on in
   * clear text. */
  static const uint32_t refusals[] = {
    NBD_REP_ERR_UNSUP, NBD_REP_ERR_POLICY, NBD_REP_ERR_INVALID,
  };
  for (size_t i = 0; i < G_N_ELEMENTS (refusals); i++) {
    Peer *p = peer_new ();
    fixed (p);
    expect_option (p, NBD_OPT_STARTTLS);
    reply (p, NBD_OPT_STARTTLS, refusals[i], NULL, 0);
    Result r;
    run (p, &r, "", NBDC_TLS_REQUIRE, TRUE);
    assert_error (&r, NBDFS_ERROR_TLS_REQUIRED, "refused STARTTLS");
    result_clear (&r);
  }

  /* TLS allowed, refused: carry on in clear. */
  Peer *p = peer_new ();
  fixed (p);
  expect_option (p, NBD_OPT_STARTTLS);
  reply (p, NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY, NULL, 0);
  sr_and_meta (p);
  expect_option (p, NBD_OPT_GO);
  info_export (p, NBD_OPT_GO, 4096, NBD_FLAG_HAS_FLAGS);
  reply (p, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
  Result r;
  run (p, &r, "", NBDC_TLS_ALLOW, FALSE);
  g_assert_true (r.ok);
  g_assert_false (r.exp.tls);
  result_clear (&r);

  /* STARTTLS acked but the peer does not speak TLS: the TLS layer fails
   * and we stop (never continue in clear after the ack). */
  p = peer_new ();
  fixed (p);
  expect_option (p, NBD_OPT_STARTTLS);
  reply (p, NBD_OPT_STARTTLS, NBD_REP_ACK, NULL, 0);
  peer_op (p, OP_CLOSE, 0, NULL, 0);
  run (p, &r, "", NBDC_TLS_REQUIRE, TRUE);
  g_assert_false (r.ok);
  result_clear (&r);
}

static void
test_timeout (void)
{
  /* The server accepts and says nothing: NBDFS_ERROR_TIMEOUT at the
   * deadline (1 s here), not a hang. */
  Peer *p = peer_new ();
  peer_op (p, OP_WAIT_EOF, 0, NULL, 0);
  NbdcOptions opts = { 0 };
  NbdExport exp = { 0 };
  g_autoptr (GError) error = NULL;
  opts.addr.export_name = g_strdup ("");
  int fd = peer_start (p);
  gint64 start = g_get_monotonic_time ();
  NbdTransport *t = nbdc_negotiate (fd, &opts, &exp,
                                    start + G_USEC_PER_SEC, &error);
  gint64 took = g_get_monotonic_time () - start;
  g_assert_null (t);
  g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_TIMEOUT);
  g_assert_nonnull (strstr (error->message, "greeting"));
  g_assert_cmpint (took, >=, G_USEC_PER_SEC - 10000);
  g_assert_cmpint (took, <, 5 * G_USEC_PER_SEC);   /* generous */
  peer_finish (p, FALSE);
  nbdc_export_clear (&exp);
  nbdc_options_clear (&opts);

  /* Silent in the middle of option haggling, too. */
  p = peer_new ();
  fixed (p);
  no_ext (p);
  expect_option (p, NBD_OPT_STRUCTURED_REPLY);
  peer_op (p, OP_WAIT_EOF, 0, NULL, 0);
  opts.addr.export_name = g_strdup ("");
  g_clear_error (&error);
  fd = peer_start (p);
  start = g_get_monotonic_time ();
  t = nbdc_negotiate (fd, &opts, &exp, start + G_USEC_PER_SEC, &error);
  g_assert_null (t);
  g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_TIMEOUT);
  g_assert_nonnull (strstr (error->message, "structured reply"));
  peer_finish (p, FALSE);
  nbdc_export_clear (&exp);
  nbdc_options_clear (&opts);
}

/* ---- nbdc_query_info and nbdc_list_exports (they connect themselves) ---- */

static char *
sock_path (void)
{
  static int n;
  g_autofree char *dir = g_dir_make_tmp ("nbdfs-neg-XXXXXX", NULL);
  g_assert_nonnull (dir);
  char *path = g_strdup_printf ("%s/s%d", dir, n++);
  return path;
}

static void
remove_sock (char *path)
{
  g_autofree char *dir = g_path_get_dirname (path);
  unlink (path);
  rmdir (dir);
  g_free (path);
}

static void
expect_disc (Peer *p)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be32 (b, NBD_REQUEST_MAGIC);
  put_be16 (b, 0);
  put_be16 (b, NBD_CMD_DISC);
  g_byte_array_set_size (b, 28);
  memset (b->data + 8, 0, 20);
  peer_op (p, OP_EXPECT, 0, b->data, b->len);
}

static void
test_query_info_fallback (void)
{
  /* No NBD_OPT_INFO: contexts listed, then GO, then NBD_CMD_DISC. */
  char *path = sock_path ();
  Peer *p = peer_new ();
  fixed (p);
  no_ext (p);
  expect_option (p, NBD_OPT_STRUCTURED_REPLY);
  reply (p, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_INFO);
  reply (p, NBD_OPT_INFO, NBD_REP_ERR_UNSUP, NULL, 0);
  expect_option (p, NBD_OPT_LIST_META_CONTEXT);
  meta_context (p, NBD_OPT_LIST_META_CONTEXT, 0, "base:allocation");
  meta_context (p, NBD_OPT_LIST_META_CONTEXT, 0, "x-odd:\x01");
  reply (p, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_SET_META_CONTEXT);
  meta_context (p, NBD_OPT_SET_META_CONTEXT, 9, "base:allocation");
  reply (p, NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_GO);
  info_export (p, NBD_OPT_GO, 65536, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY);
  info_string (p, NBD_OPT_GO, NBD_INFO_DESCRIPTION, "desc");
  reply (p, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
  expect_disc (p);
  peer_listen (p, path);

  NbdcOptions opts = { 0 };
  NbdExport exp = { 0 };
  g_autoptr (GPtrArray) ctx = NULL;
  g_autoptr (GError) error = NULL;
  opts.addr.socket_path = g_strdup (path);
  opts.addr.export_name = g_strdup ("e");
  opts.handshake_timeout = 5;
  g_assert_true (nbdc_query_info (&opts, &exp, &ctx, &error));
  g_assert_no_error (error);
  peer_finish (p, FALSE);
  g_assert_cmpuint (exp.size, ==, 65536);
  g_assert_cmpuint (exp.eflags, ==, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY);
  g_assert_cmpstr (exp.description, ==, "desc");
  g_assert_true (exp.structured);
  g_assert_cmpuint (ctx->len, ==, 2);
  g_assert_cmpstr (ctx->pdata[0], ==, "base:allocation");
  g_assert_cmpstr (ctx->pdata[1], ==, "x-odd:\\x01");
  nbdc_export_clear (&exp);
  nbdc_options_clear (&opts);
  remove_sock (path);
}

static void
test_query_info_ext (void)
{
  /* Extended headers acked: --info's closing NBD_CMD_DISC is a 32-byte
   * extended request (a 28-byte one left qemu-nbd 10 waiting for the
   * rest: "Unexpected end-of-file before all bytes were read"). */
  char *path = sock_path ();
  Peer *p = peer_new ();
  fixed (p);
  expect_option (p, NBD_OPT_EXTENDED_HEADERS);
  reply (p, NBD_OPT_EXTENDED_HEADERS, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_INFO);
  info_export (p, NBD_OPT_INFO, 65536, NBD_FLAG_HAS_FLAGS);
  reply (p, NBD_OPT_INFO, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_LIST_META_CONTEXT);
  reply (p, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_SET_META_CONTEXT);
  reply (p, NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_GO);
  info_export (p, NBD_OPT_GO, 65536, NBD_FLAG_HAS_FLAGS);
  reply (p, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be32 (b, NBD_EXTENDED_REQUEST_MAGIC);
  put_be16 (b, 0);
  put_be16 (b, NBD_CMD_DISC);
  g_byte_array_set_size (b, 32);
  memset (b->data + 8, 0, 24);
  peer_op (p, OP_EXPECT, 0, b->data, b->len);
  peer_op (p, OP_WAIT_EOF, 0, NULL, 0);
  peer_listen (p, path);

  NbdcOptions opts = { 0 };
  NbdExport exp = { 0 };
  g_autoptr (GPtrArray) ctx = NULL;
  g_autoptr (GError) error = NULL;
  opts.addr.socket_path = g_strdup (path);
  opts.handshake_timeout = 5;
  g_assert_true (nbdc_query_info (&opts, &exp, &ctx, &error));
  g_assert_no_error (error);
  peer_finish (p, FALSE);
  g_assert_true (exp.extended);
  nbdc_export_clear (&exp);
  nbdc_options_clear (&opts);
  remove_sock (path);
}

static void
test_query_info_unknown (void)
{
  /* NBD_OPT_INFO says unknown: the error lists the exports; then ABORT. */
  char *path = sock_path ();
  Peer *p = peer_new ();
  fixed (p);
  no_ext (p);
  expect_option (p, NBD_OPT_STRUCTURED_REPLY);
  reply (p, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_INFO);
  reply (p, NBD_OPT_INFO, NBD_REP_ERR_UNKNOWN, NULL, 0);
  expect_option (p, NBD_OPT_LIST);
  server_entry (p, "real", "");
  reply (p, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_ABORT);
  reply (p, NBD_OPT_ABORT, NBD_REP_ACK, NULL, 0);
  peer_listen (p, path);

  NbdcOptions opts = { 0 };
  NbdExport exp = { 0 };
  g_autoptr (GPtrArray) ctx = NULL;
  g_autoptr (GError) error = NULL;
  opts.addr.socket_path = g_strdup (path);
  opts.addr.export_name = g_strdup ("fake");
  g_assert_false (nbdc_query_info (&opts, &exp, &ctx, &error));
  peer_finish (p, FALSE);
  g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_NO_SUCH_EXPORT);
  g_autofree char *want = g_strdup_printf ("unix:%s: the server has no export "
                                           "named \"fake\"; exports on the "
                                           "server: \"real\"", path);
  g_assert_cmpstr (error->message, ==, want);
  g_assert_null (ctx);
  g_assert_null (exp.name);
  nbdc_options_clear (&opts);
  remove_sock (path);
}

static void
test_list_exports (void)
{
  char *path = sock_path ();
  Peer *p = peer_new ();
  fixed (p);
  expect_option (p, NBD_OPT_LIST);
  server_entry (p, "", "the default");
  server_entry (p, "two\nlines", "");
  reply (p, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_ABORT);
  reply (p, NBD_OPT_ABORT, NBD_REP_ACK, NULL, 0);
  peer_listen (p, path);
  NbdcOptions opts = { 0 };
  g_autoptr (GPtrArray) list = NULL;
  g_autoptr (GError) error = NULL;
  opts.addr.socket_path = g_strdup (path);
  opts.addr.export_name = g_strdup ("");
  g_assert_true (nbdc_list_exports (&opts, &list, &error));
  g_assert_no_error (error);
  peer_finish (p, FALSE);
  g_assert_cmpuint (list->len, ==, 2);
  NbdExportEntry *e0 = list->pdata[0], *e1 = list->pdata[1];
  g_assert_cmpstr (e0->name, ==, "");
  g_assert_cmpstr (e0->description, ==, "the default");
  g_assert_cmpstr (e1->name, ==, "two\\nlines");
  g_assert_cmpstr (e1->description, ==, "");
  remove_sock (path);

  /* A name length beyond the reply: protocol error, no ABORT. */
  path = sock_path ();
  p = peer_new ();
  fixed (p);
  expect_option (p, NBD_OPT_LIST);
  g_autoptr (GByteArray) b = g_byte_array_new ();
  put_be32 (b, 100);
  g_byte_array_append (b, (const guint8 *) "abc", 3);
  reply (p, NBD_OPT_LIST, NBD_REP_SERVER, b->data, b->len);
  peer_listen (p, path);
  g_clear_pointer (&opts.addr.socket_path, g_free);
  opts.addr.socket_path = g_strdup (path);
  g_clear_pointer (&list, g_ptr_array_unref);
  g_clear_error (&error);
  g_assert_false (nbdc_list_exports (&opts, &list, &error));
  g_assert_error (error, NBDFS_ERROR, NBDFS_ERROR_PROTOCOL);
  g_assert_nonnull (strstr (error->message, "bad export list entry"));
  g_assert_null (list);
  peer_finish (p, FALSE);
  nbdc_options_clear (&opts);
  remove_sock (path);
}

/* ---- extended headers (spec branch extension-ext-header) ---- */

static void
test_ext_acked (void)
{
  /* Acked: no NBD_OPT_STRUCTURED_REPLY after it ("takes precedence"),
   * straight to the meta context and GO. */
  Peer *p = peer_new ();
  fixed (p);
  peer_op (p, OP_OPTION, NBD_OPT_EXTENDED_HEADERS, "", 0);
  reply (p, NBD_OPT_EXTENDED_HEADERS, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_SET_META_CONTEXT);
  meta_context (p, NBD_OPT_SET_META_CONTEXT, 9, "base:allocation");
  reply (p, NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_GO);
  info_export (p, NBD_OPT_GO, 1 << 20, NBD_FLAG_HAS_FLAGS);
  reply (p, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
  Result r;
  run (p, &r, "", 0, FALSE);
  g_assert_true (r.ok);
  g_assert_true (r.exp.extended);
  g_assert_true (r.exp.structured);
  g_assert_true (r.exp.base_allocation);
  g_assert_cmpuint (r.exp.base_allocation_id, ==, 9);
  g_assert_cmpstr (nbdc_reply_mode_name (&r.exp), ==, "extended headers");
  result_clear (&r);
}

static void
test_ext_refused_fallback (void)
{
  /* Any refusal: structured replies instead. */
  Peer *p = peer_new ();
  fixed (p);
  expect_option (p, NBD_OPT_EXTENDED_HEADERS);
  reply_str (p, NBD_OPT_EXTENDED_HEADERS, NBD_REP_ERR_POLICY, "not today");
  expect_option (p, NBD_OPT_STRUCTURED_REPLY);
  reply (p, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_SET_META_CONTEXT);
  meta_context (p, NBD_OPT_SET_META_CONTEXT, 7, "base:allocation");
  reply (p, NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_GO);
  info_export (p, NBD_OPT_GO, 1 << 20, NBD_FLAG_HAS_FLAGS);
  reply (p, NBD_OPT_GO, NBD_REP_ACK, NULL, 0);
  Result r;
  run (p, &r, "", 0, FALSE);
  g_assert_true (r.ok);
  g_assert_false (r.exp.extended);
  g_assert_true (r.exp.structured);
  g_assert_cmpstr (nbdc_reply_mode_name (&r.exp), ==, "structured replies");
  result_clear (&r);
}

static void
test_ext_go_unsup_no_export_name (void)
{
  /* After extended headers were acked the server "MUST NOT fail
   * NBD_OPT_GO with NBD_REP_ERR_UNSUP" and we "MUST NOT use
   * NBD_OPT_EXPORT_NAME": a protocol error, and nothing more is sent
   * (the script ends; an EXPORT_NAME would fail it). */
  Peer *p = peer_new ();
  fixed (p);
  expect_option (p, NBD_OPT_EXTENDED_HEADERS);
  reply (p, NBD_OPT_EXTENDED_HEADERS, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_SET_META_CONTEXT);
  reply (p, NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, NULL, 0);
  expect_option (p, NBD_OPT_GO);
  reply (p, NBD_OPT_GO, NBD_REP_ERR_UNSUP, NULL, 0);
  peer_op (p, OP_WAIT_EOF, 0, NULL, 0);
  Result r;
  run (p, &r, "", 0, FALSE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL, "acked extended headers");
  result_clear (&r);
}

static void
test_ext_ack_with_data (void)
{
  Peer *p = peer_new ();
  fixed (p);
  expect_option (p, NBD_OPT_EXTENDED_HEADERS);
  reply (p, NBD_OPT_EXTENDED_HEADERS, NBD_REP_ACK, "xy", 2);
  Result r;
  run (p, &r, "", 0, TRUE);
  assert_error (&r, NBDFS_ERROR_PROTOCOL, "ack to extended headers");
  result_clear (&r);
}

static void
test_ext_required (void)
{
  /* --no-extended-headers against a server that requires them: the
   * option is never sent, and NBD_REP_ERR_EXT_HEADER_REQD says what to
   * do. The same with the server refusing the option it then requires. */
  for (int variant = 0; variant < 2; variant++) {
    Peer *p = peer_new ();
    fixed (p);
    if (variant == 1)
      no_ext (p);
    expect_option (p, NBD_OPT_STRUCTURED_REPLY);
    reply (p, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_UNSUP, NULL, 0);
    expect_option (p, NBD_OPT_GO);
    reply (p, NBD_OPT_GO, NBD_REP_ERR_EXT_HEADER_REQD, NULL, 0);
    expect_option (p, NBD_OPT_ABORT);
    Result r;
    memset (&r, 0, sizeof r);
    r.opts.addr.export_name = g_strdup ("");
    r.opts.addr.socket_path = g_strdup ("/scripted");
    r.opts.tls = NBDC_TLS_OFF;
    r.opts.no_extended = variant == 0;
    int fd = peer_start (p);
    NbdTransport *t = nbdc_negotiate (fd, &r.opts, &r.exp,
                                      g_get_monotonic_time ()
                                      + 5 * G_USEC_PER_SEC, &r.error);
    g_assert_null (t);
    g_test_message ("error: %s", r.error->message);
    peer_finish (p, TRUE);
    assert_error (&r, NBDFS_ERROR_UNSUPPORTED, "requires extended headers");
    assert_error (&r, NBDFS_ERROR_UNSUPPORTED,
                  variant == 0 ? "--no-extended-headers"
                  : "refused NBD_OPT_EXTENDED_HEADERS");
    result_clear (&r);
  }
}

static void
test_ext_kernel_never (void)
{
  /* Kernel mode (no_structured): neither option is sent, GO comes
   * first. */
  Peer *p = peer_new ();
  fixed (p);
  expect_option (p, NBD_OPT_GO);
  reply (p, NBD_OPT_GO, NBD_REP_ERR_EXT_HEADER_REQD, NULL, 0);
  expect_option (p, NBD_OPT_ABORT);
  Result r;
  memset (&r, 0, sizeof r);
  r.opts.addr.export_name = g_strdup ("");
  r.opts.addr.socket_path = g_strdup ("/scripted");
  r.opts.tls = NBDC_TLS_OFF;
  r.opts.no_structured = TRUE;
  r.opts.no_meta = TRUE;
  int fd = peer_start (p);
  NbdTransport *t = nbdc_negotiate (fd, &r.opts, &r.exp,
                                    g_get_monotonic_time ()
                                    + 5 * G_USEC_PER_SEC, &r.error);
  g_assert_null (t);
  peer_finish (p, TRUE);
  assert_error (&r, NBDFS_ERROR_UNSUPPORTED, "kernel's nbd driver");
  result_clear (&r);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/nbdclient/negotiate/oldstyle", test_oldstyle);
  g_test_add_func ("/nbdclient/negotiate/ext-acked", test_ext_acked);
  g_test_add_func ("/nbdclient/negotiate/ext-refused-fallback",
                   test_ext_refused_fallback);
  g_test_add_func ("/nbdclient/negotiate/ext-go-unsup",
                   test_ext_go_unsup_no_export_name);
  g_test_add_func ("/nbdclient/negotiate/ext-ack-with-data",
                   test_ext_ack_with_data);
  g_test_add_func ("/nbdclient/negotiate/ext-required", test_ext_required);
  g_test_add_func ("/nbdclient/negotiate/ext-kernel-never",
                   test_ext_kernel_never);
  g_test_add_func ("/nbdclient/negotiate/oldstyle-tls-required",
                   test_oldstyle_tls_required);
  g_test_add_func ("/nbdclient/negotiate/newstyle", test_newstyle);
  g_test_add_func ("/nbdclient/negotiate/export-name-closed",
                   test_newstyle_no_zeroes_export_closed);
  g_test_add_func ("/nbdclient/negotiate/opt-go", test_go_success);
  g_test_add_func ("/nbdclient/negotiate/opt-go-request",
                   test_go_request_bytes);
  g_test_add_func ("/nbdclient/negotiate/opt-go-fallback",
                   test_go_unsup_fallback);
  g_test_add_func ("/nbdclient/negotiate/unknown-export-lists",
                   test_go_unknown_lists_exports);
  g_test_add_func ("/nbdclient/negotiate/refusals", test_go_refusals);
  g_test_add_func ("/nbdclient/negotiate/escaped-server-text",
                   test_escaped_server_text);
  g_test_add_func ("/nbdclient/negotiate/short-read", test_short_read);
  g_test_add_func ("/nbdclient/negotiate/bad-magic", test_bad_magic);
  g_test_add_func ("/nbdclient/negotiate/wrong-option-echoed",
                   test_wrong_option_echoed);
  g_test_add_func ("/nbdclient/negotiate/oversized-reply",
                   test_oversized_reply);
  g_test_add_func ("/nbdclient/negotiate/size-too-big", test_size_too_big);
  g_test_add_func ("/nbdclient/negotiate/block-sizes", test_block_sizes);
  g_test_add_func ("/nbdclient/negotiate/unknown-info-skipped",
                   test_unknown_info_skipped);
  g_test_add_func ("/nbdclient/negotiate/ack-without-export",
                   test_ack_without_export);
  g_test_add_func ("/nbdclient/negotiate/meta-context-refused",
                   test_meta_context_refused);
  g_test_add_func ("/nbdclient/negotiate/starttls", test_starttls);
  g_test_add_func ("/nbdclient/negotiate/timeout", test_timeout);
  g_test_add_func ("/nbdclient/list/query-info-fallback",
                   test_query_info_fallback);
  g_test_add_func ("/nbdclient/list/query-info-ext", test_query_info_ext);
  g_test_add_func ("/nbdclient/list/query-info-unknown",
                   test_query_info_unknown);
  g_test_add_func ("/nbdclient/list/list-exports", test_list_exports);
  return g_test_run ();
}
