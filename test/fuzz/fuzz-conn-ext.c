/* libFuzzer target: the transmission reader (conn.c) with extended headers
 * (doc/proto.md on the spec's extension-ext-header branch: 32-byte
 * replies, NBD_REPLY_TYPE_BLOCK_STATUS_EXT), replies being the fuzz input.
 *
 * Like fuzz-conn.c, but the hand-made NbdExport has extended headers, and
 * the requests include 64-bit effect lengths (block status over 8 GiB,
 * trim and write zeroes over 6 GiB) that only an extended header can
 * carry. Byte 0 bit 0 set: no base:allocation context (so any status
 * chunk is a violation). The server thread reads every request (32 bytes
 * each, plus the write's payload) before it plays the input, so request i
 * always holds cookie 0x1_0000000i.
 *
 * Invariants, as in fuzz-conn.c: every request completes exactly once with
 * 0 or a positive errno; a successful read holds only bytes the server
 * sent (each input runs twice, buffers pre-filled 0x00 then 0xff, and the
 * results must agree); extents are contiguous from the request's offset,
 * non-empty and inside the requested range (64-bit arithmetic); nothing
 * leaks; nbdc_conn_free returns.
 */
#include <stdio.h>
#include "test/fuzz/fuzz-common.h"
#include "nbdclient/conn.h"
#include "nbdclient/protocol.h"

#define EXPORT_SIZE (UINT64_C (16) << 30)
#define CONTEXT_ID  7
#define GIB         (UINT64_C (1) << 30)

typedef struct {
  uint16_t type, flags;
  uint64_t offset;
  uint64_t count;
} Req;

/* Kept in step with test/fuzz/gen-corpus.py (REQS_EXT). */
static const Req reqs[] = {
  { NBD_CMD_READ, 0, 0, 4096 },
  { NBD_CMD_BLOCK_STATUS, 0, 0, 8 * GIB },
  { NBD_CMD_WRITE, 0, 4096, 512 },
  { NBD_CMD_TRIM, 0, GIB, 6 * GIB },
  { NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 4096, 4096 },
  { NBD_CMD_WRITE_ZEROES, 0, 0, 6 * GIB },
  { NBD_CMD_READ, NBD_CMD_FLAG_DF, EXPORT_SIZE - 512, 512 },
  { NBD_CMD_FLUSH, 0, 0, 0 },
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
  FUZZ_CHECK (res->calls == 0);
  FUZZ_CHECK (err >= 0);
  res->calls++;
  res->err = err;
}

static void
on_extent (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  Result *res = opaque;
  FUZZ_CHECK (res->calls == 0);
  FUZZ_CHECK (res->r->type == NBD_CMD_BLOCK_STATUS);
  FUZZ_CHECK (offset == res->next);
  FUZZ_CHECK (length > 0);
  FUZZ_CHECK (length <= res->r->count);
  FUZZ_CHECK (offset - res->r->offset <= res->r->count - length);
  if (res->r->flags & NBD_CMD_FLAG_REQ_ONE)
    FUZZ_CHECK (res->extents == 0);
  res->next = offset + length;
  res->extents++;
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_init_logging ();
  g_setenv ("G_MESSAGES_DEBUG", "all", TRUE);
  return 0;
}

static void
run_once (const uint8_t *data, size_t size, gboolean meta, uint8_t fill,
          Result *res)
{
  int sv[2];
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    abort ();
  static uint8_t wbuf[512];
  size_t req_bytes = 0;
  for (size_t i = 0; i < N_REQS; i++) {
    req_bytes += sizeof (struct nbd_extended_request);
    if (reqs[i].type == NBD_CMD_WRITE)
      req_bytes += reqs[i].count;
  }
  FuzzServer srv = { .fd = sv[1], .listen_fd = -1, .data = data,
                     .size = size, .wait_for = req_bytes };
  fuzz_server_start (&srv);

  NbdExport exp = {
    .size = EXPORT_SIZE, .eflags = NBD_FLAG_HAS_FLAGS, .min_block = 1,
    .pref_block = 4096, .max_block = 1 << 20, .structured = TRUE,
    .extended = TRUE, .base_allocation = meta,
    .base_allocation_id = CONTEXT_ID,
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
      .buf = r->type == NBD_CMD_WRITE ? wbuf : res[i].buf,
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
  gboolean meta = !(data[0] & 1);
  Result a[N_REQS], b[N_REQS];
  run_once (data + 1, size - 1, meta, 0x00, a);
  run_once (data + 1, size - 1, meta, 0xff, b);
  for (size_t i = 0; i < N_REQS; i++) {
    if (g_getenv ("NBDFS_FUZZ_VERBOSE"))
      fprintf (stderr, "fuzz-conn-ext: request %zu (type %u): %s, %u "
               "extents\n", i, reqs[i].type,
               a[i].err ? g_strerror (a[i].err) : "ok", a[i].extents);
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
