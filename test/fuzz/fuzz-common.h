/* Shared by the libFuzzer targets in test/fuzz/: a "server" thread that
 * plays the fuzz input as everything the server says, and checks on what
 * nbdfs shows a user. Header-only: each target is one .c file. */
#ifndef NBDFS_FUZZ_COMMON_H
#define NBDFS_FUZZ_COMMON_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdio.h>
#include <glib.h>
#include "nbdclient/protocol.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
int LLVMFuzzerInitialize (int *argc, char ***argv);

/* Report a broken invariant and crash so libFuzzer keeps the input. */
#define FUZZ_CHECK(cond)                                                 \
  do {                                                                   \
    if (!(cond)) {                                                       \
      fprintf (stderr, "fuzz check failed: %s (%s:%d)\n", #cond,         \
               __FILE__, __LINE__);                                      \
      abort ();                                                          \
    }                                                                    \
  } while (0)

/* Server text reaches the terminal only escaped: no control bytes, valid
 * UTF-8 ("Bad input" rules; names.h nbdc_escape_text). */
static inline void
fuzz_check_printable (const char *s)
{
  if (s == NULL)
    return;
  FUZZ_CHECK (g_utf8_validate (s, -1, NULL));
  for (const unsigned char *p = (const unsigned char *) s; *p; p++)
    FUZZ_CHECK (*p >= 0x20 && *p != 0x7f);
}

/* The server: writes the whole input, half-closes, then reads (and drops)
 * whatever the client sends until the client hangs up, so the client never
 * blocks on a full socket buffer and always sees EOF after the input. */
typedef struct {
  int fd;                     /* server end; -1: accept on listen_fd */
  int listen_fd;
  const uint8_t *data;
  size_t size;
  /* Optional: read this many bytes of client requests before replying
   * (so slot numbers, hence cookies, are deterministic). */
  size_t wait_for;
  /* Optional: called with those wait_for bytes, to check them. */
  void (*check) (const uint8_t *req, size_t len);
  GThread *thread;
} FuzzServer;

static gpointer
fuzz_server_run (gpointer p)
{
  FuzzServer *s = p;
  if (s->fd < 0) {
    s->fd = accept (s->listen_fd, NULL, NULL);
    if (s->fd < 0)
      return NULL;
  }
  char buf[65536];
  uint8_t *reqs = g_malloc (s->wait_for + 1);
  size_t got = 0;
  while (got < s->wait_for) {
    ssize_t r = recv (s->fd, reqs + got, s->wait_for - got, 0);
    if (r <= 0)
      break;
    got += r;
  }
  if (s->check && got == s->wait_for)
    s->check (reqs, got);
  g_free (reqs);
  size_t off = 0;
  while (off < s->size) {
    ssize_t r = send (s->fd, s->data + off, s->size - off, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    off += r;
  }
  shutdown (s->fd, SHUT_WR);
  while (recv (s->fd, buf, sizeof buf, 0) > 0)
    ;
  return NULL;
}

static inline void
fuzz_server_start (FuzzServer *s)
{
  s->thread = g_thread_new ("fuzz-server", fuzz_server_run, s);
}

static inline void
fuzz_server_join (FuzzServer *s)
{
  g_thread_join (s->thread);
  if (s->fd >= 0)
    close (s->fd);
  s->fd = -1;
}

/* Quiet: warnings about hostile input are expected by the thousand. Set
 * NBDFS_FUZZ_VERBOSE=1 to see them (and G_MESSAGES_DEBUG=all for traces). */
static GLogWriterOutput
fuzz_log_writer (GLogLevelFlags level, const GLogField *fields, gsize n,
                 gpointer data)
{
  if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
    return g_log_writer_default (level, fields, n, data);
  if (g_getenv ("NBDFS_FUZZ_VERBOSE"))
    return g_log_writer_default (level, fields, n, data);
  return G_LOG_WRITER_HANDLED;
}

static inline void
fuzz_init_logging (void)
{
  g_log_set_writer_func (fuzz_log_writer, NULL, NULL);
  /* g_critical (a g_return_if_fail on server input) is a bug: crash. */
  g_log_set_always_fatal (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR);
}

/* What a fuzzing server negotiated, for fuzz_check_request. */
typedef struct {
  uint64_t size;              /* as sent in NBD_INFO_EXPORT */
  uint32_t min_block;         /* advertised, else 1 */
  uint32_t max_payload;       /* advertised, else 32 MiB ("Size
                                 constraints": a client SHOULD keep READ
                                 and WRITE to that without advertisement) */
  uint16_t eflags;
  gboolean structured;
  gboolean base_allocation;   /* a context was granted */
} FuzzNegotiated;

#define FUZZ_REQ_CHECK(cond, what)                                       \
  do {                                                                   \
    if (!(cond)) {                                                       \
      fprintf (stderr, "fuzz: the client broke the spec: %s (type %u, "  \
               "flags 0x%x, offset %llu, count %u; size %llu, min %u, "  \
               "max %u, eflags 0x%x)\n", what, type, flags,              \
               (unsigned long long) offset, count,                       \
               (unsigned long long) n->size, n->min_block,               \
               n->max_payload, n->eflags);                               \
      abort ();                                                          \
    }                                                                    \
  } while (0)

/* One request header as the client sent it, checked against the spec
 * (doc/proto.md "Request message", "Size constraints", "Request types",
 * "Command flags") and what was negotiated: a violation aborts, so
 * libFuzzer keeps the input. The magic is checked by the caller. */
static inline void
fuzz_check_request (const FuzzNegotiated *n, uint16_t type, uint16_t flags,
                    uint64_t offset, uint32_t count)
{
  uint16_t ef = n->eflags;
  switch (type) {
  case NBD_CMD_READ: case NBD_CMD_DISC:
    break;
  case NBD_CMD_WRITE:
    FUZZ_REQ_CHECK (!(ef & NBD_FLAG_READ_ONLY), "write to a read-only export");
    break;
  case NBD_CMD_FLUSH:
    FUZZ_REQ_CHECK (ef & NBD_FLAG_SEND_FLUSH, "FLUSH not advertised");
    break;
  case NBD_CMD_TRIM:
    FUZZ_REQ_CHECK (ef & NBD_FLAG_SEND_TRIM, "TRIM not advertised");
    FUZZ_REQ_CHECK (!(ef & NBD_FLAG_READ_ONLY), "trim of a read-only export");
    break;
  case NBD_CMD_CACHE:
    FUZZ_REQ_CHECK (ef & NBD_FLAG_SEND_CACHE, "CACHE not advertised");
    break;
  case NBD_CMD_WRITE_ZEROES:
    FUZZ_REQ_CHECK (ef & NBD_FLAG_SEND_WRITE_ZEROES,
                    "WRITE_ZEROES not advertised");
    FUZZ_REQ_CHECK (!(ef & NBD_FLAG_READ_ONLY), "zero of a read-only export");
    break;
  case NBD_CMD_BLOCK_STATUS:
    FUZZ_REQ_CHECK (n->structured && n->base_allocation,
                    "BLOCK_STATUS without structured replies and a context");
    break;
  default:
    FUZZ_REQ_CHECK (0, "unknown or unnegotiated command");
  }
  /* "Command flags": each flag only where it applies and was offered. */
  FUZZ_REQ_CHECK (!(flags & ~(NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE
                              | NBD_CMD_FLAG_DF | NBD_CMD_FLAG_REQ_ONE
                              | NBD_CMD_FLAG_FAST_ZERO)),
                  "unknown or unnegotiated command flag");
  if (flags & NBD_CMD_FLAG_FUA)
    FUZZ_REQ_CHECK (ef & NBD_FLAG_SEND_FUA, "FUA not advertised");
  if (flags & NBD_CMD_FLAG_NO_HOLE)
    FUZZ_REQ_CHECK (type == NBD_CMD_WRITE_ZEROES, "NO_HOLE off WRITE_ZEROES");
  if (flags & NBD_CMD_FLAG_FAST_ZERO)
    FUZZ_REQ_CHECK (type == NBD_CMD_WRITE_ZEROES
                    && (ef & NBD_FLAG_SEND_FAST_ZERO), "FAST_ZERO misused");
  if (flags & NBD_CMD_FLAG_DF)
    FUZZ_REQ_CHECK (type == NBD_CMD_READ && n->structured
                    && (ef & NBD_FLAG_SEND_DF), "DF misused");
  if (flags & NBD_CMD_FLAG_REQ_ONE)
    FUZZ_REQ_CHECK (type == NBD_CMD_BLOCK_STATUS, "REQ_ONE off BLOCK_STATUS");
  if (type == NBD_CMD_DISC) {
    FUZZ_REQ_CHECK (offset == 0 && count == 0,
                    "DISC with a nonzero offset or length");
    return;
  }
  if (type == NBD_CMD_FLUSH)
    return;
  /* "Size constraints": aligned, inside the export, payload bounded. */
  uint32_t min = n->min_block ? n->min_block : 1;
  FUZZ_REQ_CHECK (offset % min == 0 && count % min == 0,
                  "not a multiple of the minimum block size");
  FUZZ_REQ_CHECK (offset <= n->size && count <= n->size - offset,
                  "offset + length past the end of the export");
  if (type == NBD_CMD_WRITE || type == NBD_CMD_READ)
    FUZZ_REQ_CHECK (count <= n->max_payload,
                    "payload over the maximum block size");
}

#endif
