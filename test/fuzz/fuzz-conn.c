/* libFuzzer target: the transmission reader (conn.c) against replies that
 * are the fuzz input.
 *
 * A connection on a socketpair with a hand-made NbdExport (structured
 * replies and base:allocation, context id 7 — or, if bit 0 of byte 0 is
 * set, simple replies only) gets the fixed requests below. The server
 * thread reads all of them first, so every request holds the cookie it
 * always gets (slot i, generation 1: 0x1_0000000i), then sends the rest of
 * the input and half-closes.
 *
 * Invariants (ASan/UBSan find the memory errors):
 *  - every request completes exactly once, with 0 or a positive errno;
 *  - a read that succeeds had every byte written by data or hole chunks:
 *    each input runs twice, read buffers pre-filled with 0x00 then 0xff;
 *    both runs must agree on every result, and a successful read must
 *    have the same bytes in both (a byte we did not receive would differ);
 *  - block status extents are contiguous from the request's offset,
 *    non-empty, inside the requested range;
 *  - nothing leaks; nbdc_conn_free returns (no hang).
 */
#include <stdio.h>
#include "test/fuzz/fuzz-common.h"
#include "nbdclient/conn.h"
#include "nbdclient/protocol.h"

#define EXPORT_SIZE (1024 * 1024)
#define CONTEXT_ID  7

typedef struct {
  uint16_t type, flags;
  uint64_t offset;
  uint32_t count;
} Req;

/* Kept in step with test/fuzz/gen-corpus.py. */
static const Req reqs[] = {
  { NBD_CMD_READ, 0, 0, 4096 },
  { NBD_CMD_READ, 0, 8192, 512 },
  { NBD_CMD_BLOCK_STATUS, 0, 0, 65536 },
  { NBD_CMD_WRITE, 0, 4096, 512 },
  { NBD_CMD_FLUSH, 0, 0, 0 },
  { NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 4096, 4096 },
  { NBD_CMD_TRIM, 0, 0, 4096 },
  { NBD_CMD_READ, NBD_CMD_FLAG_DF, EXPORT_SIZE - 512, 512 },
};
#define N_REQS G_N_ELEMENTS (reqs)

typedef struct {
  const Req *r;
  int calls;
  int err;
  uint8_t *buf;
  uint64_t next;              /* block status: where the next extent starts */
  unsigned extents;
} Result;

static void
on_done (void *opaque, int err)
{
  Result *res = opaque;
  FUZZ_CHECK (res->calls == 0);      /* exactly once */
  FUZZ_CHECK (err >= 0);
  res->calls++;
  res->err = err;
}

static void
on_extent (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  Result *res = opaque;
  FUZZ_CHECK (res->calls == 0);      /* not after done */
  FUZZ_CHECK (res->r->type == NBD_CMD_BLOCK_STATUS);
  FUZZ_CHECK (offset == res->next);
  FUZZ_CHECK (length > 0);
  FUZZ_CHECK (offset + length <= res->r->offset + res->r->count);
  if (res->r->flags & NBD_CMD_FLAG_REQ_ONE)
    FUZZ_CHECK (res->extents == 0);
  res->next = offset + length;
  res->extents++;
}

/* What conn.c put on the wire: each request as submitted, in order (one
 * thread submits them), with the request magic, distinct cookies and the
 * WRITE payload after its header (doc/proto.md "Request message"). What
 * to send is the upper layer's choice (fuzz-pool checks that against the
 * negotiation); conn.c must encode it exactly. */
static const uint8_t wbuf[512] = { 1, 2, 3, 4, 5, 6, 7, 8 };

static void
check_wire (const uint8_t *p, size_t len)
{
  uint64_t cookies[N_REQS];
  size_t at = 0;
  for (size_t i = 0; i < N_REQS; i++) {
    struct nbd_request r;
    FUZZ_CHECK (len - at >= sizeof r);
    memcpy (&r, p + at, sizeof r);
    at += sizeof r;
    FUZZ_CHECK (GUINT32_FROM_BE (r.magic) == NBD_REQUEST_MAGIC);
    FUZZ_CHECK (GUINT16_FROM_BE (r.type) == reqs[i].type);
    FUZZ_CHECK (GUINT16_FROM_BE (r.flags) == reqs[i].flags);
    FUZZ_CHECK (GUINT64_FROM_BE (r.offset) == reqs[i].offset);
    FUZZ_CHECK (GUINT32_FROM_BE (r.count) == reqs[i].count);
    cookies[i] = r.cookie;
    for (size_t k = 0; k < i; k++)
      FUZZ_CHECK (cookies[k] != cookies[i]);
    if (reqs[i].type == NBD_CMD_WRITE) {
      FUZZ_CHECK (len - at >= reqs[i].count);
      FUZZ_CHECK (memcmp (p + at, wbuf, reqs[i].count) == 0);
      at += reqs[i].count;
    }
  }
  FUZZ_CHECK (at == len);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_init_logging ();
  g_setenv ("G_MESSAGES_DEBUG", "all", TRUE);
  return 0;
}

static void
run_once (const uint8_t *data, size_t size, gboolean structured,
          uint8_t fill, Result *res)
{
  int sv[2];
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    abort ();
  size_t req_bytes = 0;
  for (size_t i = 0; i < N_REQS; i++) {
    req_bytes += sizeof (struct nbd_request);
    if (reqs[i].type == NBD_CMD_WRITE)
      req_bytes += reqs[i].count;
  }
  FuzzServer srv = { .fd = sv[1], .listen_fd = -1, .data = data,
                     .size = size, .wait_for = req_bytes,
                     .check = check_wire };
  fuzz_server_start (&srv);

  NbdExport exp = {
    .size = EXPORT_SIZE, .eflags = NBD_FLAG_HAS_FLAGS, .min_block = 1,
    .pref_block = 4096, .max_block = 1 << 20, .structured = structured,
    .base_allocation = structured, .base_allocation_id = CONTEXT_ID,
  };
  NbdcConnConfig cfg = {
    .max_in_flight = N_REQS, .request_timeout = 30, .name = "fuzz",
  };
  NbdConn *conn = nbdc_conn_new (nbdc_transport_plain_new (sv[0]), &exp,
                                 &cfg);
  for (size_t i = 0; i < N_REQS; i++) {
    const Req *r = &reqs[i];
    res[i] = (Result) { .r = r, .err = -1, .next = r->offset };
    if (r->type == NBD_CMD_READ) {
      res[i].buf = g_malloc (r->count);
      memset (res[i].buf, fill, r->count);
    }
    NbdcCmd cmd = {
      .type = r->type, .flags = r->flags, .offset = r->offset,
      .count = r->count,
      .buf = r->type == NBD_CMD_WRITE ? (void *) wbuf : res[i].buf,
      .extent = r->type == NBD_CMD_BLOCK_STATUS ? on_extent : NULL,
      .done = on_done, .opaque = &res[i],
    };
    nbdc_conn_submit (conn, &cmd);
  }
  nbdc_conn_drain (conn);
  nbdc_conn_free (conn);
  fuzz_server_join (&srv);
  for (size_t i = 0; i < N_REQS; i++)
    FUZZ_CHECK (res[i].calls == 1);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  gboolean structured = !(data[0] & 1);
  Result a[N_REQS], b[N_REQS];
  run_once (data + 1, size - 1, structured, 0x00, a);
  run_once (data + 1, size - 1, structured, 0xff, b);
  for (size_t i = 0; i < N_REQS; i++) {
    if (g_getenv ("NBDFS_FUZZ_VERBOSE"))
      fprintf (stderr, "fuzz-conn: request %zu (type %u): %s, %u extents\n",
               i, reqs[i].type, a[i].err ? g_strerror (a[i].err) : "ok",
               a[i].extents);
    if (a[i].err != b[i].err) {
      fprintf (stderr, "request %zu: err %d then %d\n", i, a[i].err, b[i].err);
      FUZZ_CHECK (a[i].err == b[i].err);
    }
    if (a[i].buf && a[i].err == 0
        && memcmp (a[i].buf, b[i].buf, reqs[i].count) != 0) {
      fprintf (stderr, "request %zu: read succeeded with bytes the server "
               "never sent\n", i);
      FUZZ_CHECK (!"uninitialised bytes in a successful read");
    }
    if (reqs[i].type == NBD_CMD_BLOCK_STATUS)
      FUZZ_CHECK (a[i].extents == b[i].extents);
    g_free (a[i].buf);
    g_free (b[i].buf);
  }
  return 0;
}
