/* libFuzzer target: the whole client stack above the socket (pool.c,
 * blocksize.c splitting / read-modify-write / widening, conn.c) against a
 * server whose *decisions* are the fuzz input.
 *
 * Raw bytes rarely get past the handshake and cannot follow the cookies of
 * requests the client makes up as it goes (read-modify-write), so this
 * server is reactive: it negotiates (block sizes, size, flags, structured
 * replies from the input), then answers each request it reads with what
 * the next input bytes choose: a correct reply (split into chunks at a
 * chosen point), an error (simple or chunk), a wrong cookie, an offset
 * outside the request, garbage then EOF, or a hang-up. Once the input is
 * used up it answers correctly, so every run ends.
 *
 * Every request the client sends is checked against the spec and what
 * was negotiated (fuzz_check_request: command and flags offered, offset
 * and length aligned to the minimum block and inside the export, payload
 * within the maximum; nothing after NBD_CMD_DISC); a violation aborts.
 *
 * The client side runs a fixed list of unaligned operations one at a
 * time, then a concurrent batch (run_concurrent, below). Invariants: every
 * done() exactly once with 0 or a positive errno; extents inside the
 * asked range; no crash, leak or UB; a successful one-at-a-time read
 * returns exactly the server's disk (this server sends holes only where
 * the disk is zero); the concurrent batch leaves every byte as some order
 * of its operations would. Each input runs twice, read buffers pre-filled
 * 0x00 / 0xff, so no coincidence hides a byte the server never sent.
 */
#include <stdio.h>
#include <sys/un.h>
#include "test/fuzz/fuzz-common.h"
#include "nbdclient/pool.h"
#include "nbdclient/protocol.h"

#define MAX_SIZE   (256 * 1024)
#define CONTEXT_ID 5

typedef struct {
  const uint8_t *p;
  size_t n;
} Fz;

static uint8_t
fz8 (Fz *f)
{
  if (f->n == 0)
    return 0;
  f->n--;
  return *f->p++;
}

static uint32_t
fz32 (Fz *f)
{
  uint32_t v = 0;
  for (int i = 0; i < 4; i++)
    v = v << 8 | fz8 (f);
  return v;
}

static int listen_fd = -1;
static char abstract_name[64];

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_init_logging ();
  g_setenv ("G_MESSAGES_DEBUG", "all", TRUE);
  snprintf (abstract_name + 1, sizeof abstract_name - 1,
            "nbdfs-fuzz-pool-%d", (int) getpid ());
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  size_t len = 1 + strlen (abstract_name + 1);
  memcpy (sun.sun_path, abstract_name, len);
  listen_fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd < 0
      || bind (listen_fd, (struct sockaddr *) &sun,
               offsetof (struct sockaddr_un, sun_path) + len) < 0
      || listen (listen_fd, 4) < 0) {
    perror ("fuzz-pool: listen");
    abort ();
  }
  return 0;
}

/* ---- the server ---- */

typedef struct {
  Fz fz;
  int fd;
  gboolean structured;
  uint64_t size;
  FuzzNegotiated neg;         /* every request is checked against it */
  uint8_t *disk;
  /* FNV-1a over everything received and sent, in order: two runs with
   * the same transcript showed the client exactly the same bytes. */
  uint64_t transcript;
} Srv;

static void
mix (Srv *s, char dir, const void *buf, size_t len)
{
  const uint8_t *p = buf;
  s->transcript = (s->transcript ^ (uint8_t) dir) * 0x100000001b3ull;
  for (size_t i = 0; i < len; i++)
    s->transcript = (s->transcript ^ p[i]) * 0x100000001b3ull;
}

static gboolean
rd (Srv *s, void *buf, size_t len)
{
  char *p = buf;
  size_t want = len;
  while (len > 0) {
    ssize_t r = recv (s->fd, p, len, 0);
    if (r <= 0)
      return FALSE;
    p += r;
    len -= r;
  }
  mix (s, '<', buf, want);
  return TRUE;
}

static void
wr_raw (Srv *s, const void *buf, size_t len)
{
  const char *p = buf;
  while (len > 0) {
    ssize_t r = send (s->fd, p, len, MSG_NOSIGNAL);
    if (r <= 0)
      return;
    p += r;
    len -= r;
  }
}

static void
wr (Srv *s, const void *buf, size_t len)
{
  mix (s, '>', buf, len);
  wr_raw (s, buf, len);
}

/* Cookies depend on which slot was free (thread timing): the transcript
 * records a reply header with the cookie zeroed. */
static void
wr_header (Srv *s, const void *hdr, size_t len, size_t cookie_at)
{
  uint8_t copy[32];
  memcpy (copy, hdr, len);
  memset (copy + cookie_at, 0, 8);
  mix (s, '>', copy, len);
  wr_raw (s, hdr, len);
}

static void
opt_reply (Srv *s, uint32_t opt, uint32_t type, const void *data,
           uint32_t len)
{
  struct nbd_fixed_new_option_reply h = {
    GUINT64_TO_BE (NBD_OPT_REPLY_MAGIC), GUINT32_TO_BE (opt),
    GUINT32_TO_BE (type), GUINT32_TO_BE (len),
  };
  wr (s, &h, sizeof h);
  if (len)
    wr (s, data, len);
}

/* Fixed newstyle, then options until GO. FALSE: stop serving. */
static gboolean
negotiate (Srv *s, uint8_t mode)
{
  struct nbd_new_handshake g = {
    GUINT64_TO_BE (NBD_INIT_PASSWD), GUINT64_TO_BE (NBD_NEWSTYLE_MAGIC),
    GUINT16_TO_BE (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
  };
  wr (s, &g, sizeof g);
  uint32_t cflags;
  if (!rd (s, &cflags, 4))
    return FALSE;
  for (;;) {
    struct nbd_new_option o;
    if (!rd (s, &o, sizeof o))
      return FALSE;
    uint32_t opt = GUINT32_FROM_BE (o.option), len = GUINT32_FROM_BE (o.optlen);
    if (len > 65536)
      return FALSE;
    char data[65536];
    if (len && !rd (s, data, len))
      return FALSE;
    switch (opt) {
    case NBD_OPT_STRUCTURED_REPLY:
      s->structured = s->neg.structured = !(mode & 1);
      opt_reply (s, opt, s->structured ? NBD_REP_ACK : NBD_REP_ERR_UNSUP,
                 NULL, 0);
      break;
    case NBD_OPT_SET_META_CONTEXT: {
      char m[4 + 15];
      uint32_t id = GUINT32_TO_BE (CONTEXT_ID);
      memcpy (m, &id, 4);
      memcpy (m + 4, "base:allocation", 15);
      if (!(mode & 2))
        opt_reply (s, opt, NBD_REP_META_CONTEXT, m, sizeof m);
      s->neg.base_allocation = !(mode & 2);
      opt_reply (s, opt, NBD_REP_ACK, NULL, 0);
      break;
    }
    case NBD_OPT_GO: {
      s->neg.size = s->size;
      s->neg.eflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH
        | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_CACHE | NBD_FLAG_SEND_DF
        | (mode & 4 ? NBD_FLAG_SEND_FUA : 0)
        | (mode & 8 ? NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO
           : 0);
      s->neg.min_block = 1;
      s->neg.max_payload = NBD_DEFAULT_MAX_PAYLOAD;
      struct nbd_info_export ie = {
        GUINT16_TO_BE (NBD_INFO_EXPORT), GUINT64_TO_BE (s->size),
        GUINT16_TO_BE (s->neg.eflags),
      };
      opt_reply (s, opt, NBD_REP_INFO, &ie, sizeof ie);
      if (mode & 0x10) {
        /* Block sizes from the input: usually valid, sometimes not. */
        uint32_t min = 1u << (fz8 (&s->fz) % 14);
        uint32_t pref = MAX (min, 512u) << (fz8 (&s->fz) % 4);
        uint32_t max = pref * (1 + fz8 (&s->fz) % 48);
        if (mode & 0x20)
          max = fz32 (&s->fz);
        /* nbdfs asks for NBD_INFO_BLOCK_SIZE in GO, so it MUST abide by
         * these ("Size constraints"). */
        s->neg.min_block = min;
        s->neg.max_payload = max;
        struct nbd_info_block_size ib = {
          GUINT16_TO_BE (NBD_INFO_BLOCK_SIZE), GUINT32_TO_BE (min),
          GUINT32_TO_BE (pref), GUINT32_TO_BE (max),
        };
        opt_reply (s, opt, NBD_REP_INFO, &ib, sizeof ib);
      }
      opt_reply (s, opt, NBD_REP_ACK, NULL, 0);
      return TRUE;
    }
    default:
      opt_reply (s, opt, NBD_REP_ERR_UNSUP, NULL, 0);
      break;
    }
  }
}

static void
chunk (Srv *s, uint16_t flags, uint16_t type, uint64_t cookie,
       const void *a, size_t alen, const void *b, size_t blen)
{
  struct nbd_structured_reply h = {
    GUINT32_TO_BE (NBD_STRUCTURED_REPLY_MAGIC), GUINT16_TO_BE (flags),
    GUINT16_TO_BE (type), GUINT64_TO_BE (cookie),
    GUINT32_TO_BE ((uint32_t) (alen + blen)),
  };
  wr_header (s, &h, sizeof h, offsetof (struct nbd_structured_reply, cookie));
  if (alen)
    wr (s, a, alen);
  if (blen)
    wr (s, b, blen);
}

static void
simple (Srv *s, uint64_t cookie, uint32_t error, const void *d, size_t len)
{
  struct nbd_simple_reply h = {
    GUINT32_TO_BE (NBD_SIMPLE_REPLY_MAGIC), GUINT32_TO_BE (error),
    GUINT64_TO_BE (cookie),
  };
  wr_header (s, &h, sizeof h, offsetof (struct nbd_simple_reply, cookie));
  if (len)
    wr (s, d, len);
}

/* A correct reply; `shift` moves content chunks (0 = correct). */
static void
reply_ok (Srv *s, uint16_t type, uint64_t cookie, uint64_t off,
          uint32_t count, int64_t shift)
{
  const uint8_t *src = s->disk + MIN (off, s->size);
  gboolean inside = off <= s->size && count <= s->size - off;
  if (type == NBD_CMD_READ && !inside) {
    if (s->structured) {
      struct nbd_structured_reply_error e = { GUINT32_TO_BE (NBD_EINVAL), 0 };
      chunk (s, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, cookie,
             &e, sizeof e, NULL, 0);
    }
    else
      simple (s, cookie, NBD_EINVAL, NULL, 0);
    return;
  }
  if (type == NBD_CMD_READ && s->structured) {
    uint32_t split = count ? fz32 (&s->fz) % (count + 1) : 0;
    gboolean hole = fz8 (&s->fz) & 1;
    uint64_t o1 = GUINT64_TO_BE (off + shift);
    if (split > 0 || count == 0)
      chunk (s, split == count ? NBD_REPLY_FLAG_DONE : 0,
             NBD_REPLY_TYPE_OFFSET_DATA, cookie, &o1, 8, src, split);
    if (split < count) {
      /* A hole only where the disk is zero: this server lies only on
       * purpose (the cases below), so the concurrent check can trust it. */
      for (uint32_t k = split; hole && k < count; k++)
        hole = src[k] == 0;
      if (hole) {
        struct nbd_structured_reply_offset_hole h = {
          GUINT64_TO_BE (off + split), GUINT32_TO_BE (count - split),
        };
        chunk (s, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_HOLE, cookie,
               &h, sizeof h, NULL, 0);
      }
      else {
        uint64_t o2 = GUINT64_TO_BE (off + split);
        chunk (s, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, cookie,
               &o2, 8, src + split, count - split);
      }
    }
    return;
  }
  if (type == NBD_CMD_READ) {
    simple (s, cookie, 0, src, count);
    return;
  }
  if (type == NBD_CMD_BLOCK_STATUS && s->structured) {
    uint32_t n = 1 + fz8 (&s->fz) % 4;
    struct {
      uint32_t id;
      struct nbd_block_descriptor d[4];
    } __attribute__((packed)) bs = { GUINT32_TO_BE (CONTEXT_ID) };
    uint32_t left = count ? count : 1;
    for (uint32_t i = 0; i < n; i++) {
      uint32_t l = i + 1 == n ? left + (uint32_t) shift
        : 1 + fz32 (&s->fz) % left;
      if (l == 0)
        l = 1;
      bs.d[i].length = GUINT32_TO_BE (l);
      bs.d[i].status_flags = GUINT32_TO_BE (fz8 (&s->fz) & 3);
      left = left > l ? left - l : 1;
    }
    chunk (s, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, cookie, &bs,
           4 + 8 * n, NULL, 0);
    return;
  }
  if ((type == NBD_CMD_WRITE_ZEROES || type == NBD_CMD_TRIM) && inside)
    memset (s->disk + off, 0, count);
  if (s->structured && fz8 (&s->fz) & 1)
    chunk (s, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, cookie,
           NULL, 0, NULL, 0);
  else
    simple (s, cookie, 0, NULL, 0);
}

static gpointer
serve (gpointer data)
{
  Srv *s = data;
  s->fd = accept (listen_fd, NULL, NULL);
  if (s->fd < 0)
    return NULL;
  uint8_t mode = fz8 (&s->fz);
  s->size = fz32 (&s->fz) % MAX_SIZE;
  gboolean disc = FALSE;
  if (!negotiate (s, mode))
    goto out;
  for (;;) {
    struct nbd_request r;
    uint64_t before = s->transcript;
    if (!rd (s, &r, sizeof r))
      break;
    struct nbd_request masked = r;
    masked.cookie = 0;
    s->transcript = before;
    mix (s, '<', &masked, sizeof masked);
    uint16_t type = GUINT16_FROM_BE (r.type);
    uint64_t cookie = GUINT64_FROM_BE (r.cookie);
    uint64_t off = GUINT64_FROM_BE (r.offset);
    uint32_t count = GUINT32_FROM_BE (r.count);
    FUZZ_CHECK (GUINT32_FROM_BE (r.magic) == NBD_REQUEST_MAGIC);
    fuzz_check_request (&s->neg, type, GUINT16_FROM_BE (r.flags), off,
                        count);
    if (type == NBD_CMD_DISC) {
      disc = TRUE;
      break;
    }
    if (type == NBD_CMD_WRITE) {
      if (count > 64 * 1024 * 1024)
        break;
      uint8_t *buf = g_malloc (count ? count : 1);
      gboolean ok = rd (s, buf, count);
      if (ok && off <= s->size && count <= s->size - off)
        memcpy (s->disk + off, buf, count);
      g_free (buf);
      if (!ok)
        break;
    }
    uint8_t d = fz8 (&s->fz);
    switch (d >> 4) {
    default:                  /* correct (most values) */
      reply_ok (s, type, cookie, off, count, 0);
      break;
    case 10:                  /* an error, simple or chunk */
    case 11: {
      uint32_t err = d & 1 ? fz32 (&s->fz) : (uint32_t[]) { 1, 5, 12, 22, 28, 95, 108 }[d % 7];
      /* Error 0 would be a success without its data: the client would
       * rightly wait for the data, and this server for the next request. */
      if (err == 0)
        err = NBD_EIO;
      if (d >> 4 == 11 && s->structured) {
        char msg[3] = "e\n\x1b";
        struct nbd_structured_reply_error e = {
          GUINT32_TO_BE (err), GUINT16_TO_BE (sizeof msg),
        };
        chunk (s, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, cookie,
               &e, sizeof e, msg, sizeof msg);
      }
      else
        simple (s, cookie, err, NULL, 0);
      break;
    }
    case 12:                  /* somebody else's cookie */
      reply_ok (s, type, cookie ^ ((uint64_t) fz32 (&s->fz) << (d & 32)),
                off, count, 0);
      break;
    case 13:                  /* content outside the request */
      reply_ok (s, type, cookie, off, count,
                (int32_t) fz32 (&s->fz) % 4096);
      break;
    case 14: {                /* garbage, then hang up */
      uint8_t junk[64];
      size_t n = fz8 (&s->fz) % sizeof junk;
      for (size_t i = 0; i < n; i++)
        junk[i] = fz8 (&s->fz);
      wr (s, junk, n);
      goto out;
    }
    case 15:                  /* hang up */
      goto out;
    }
  }
out:
  if (s->fd >= 0) {
    shutdown (s->fd, SHUT_WR);
    char buf[4096];
    while (recv (s->fd, buf, sizeof buf, 0) > 0)
      /* "A client MUST NOT send anything to the server after sending an
       * NBD_CMD_DISC command." */
      FUZZ_CHECK (!disc);
    close (s->fd);
  }
  return NULL;                /* s->disk: run_once frees it */
}

/* ---- the client ---- */

typedef struct {
  GMutex lock;
  GCond cond;
  int calls;
  int err;
  uint64_t start, end, next;
} Wait;

static void
w_done (void *opaque, int err)
{
  Wait *w = opaque;
  g_mutex_lock (&w->lock);
  FUZZ_CHECK (w->calls == 0);
  FUZZ_CHECK (err >= 0);
  w->calls++;
  w->err = err;
  g_cond_signal (&w->cond);
  g_mutex_unlock (&w->lock);
}

static void
w_extent (void *opaque, uint64_t off, uint64_t len, uint32_t flags)
{
  Wait *w = opaque;
  FUZZ_CHECK (w->calls == 0);
  FUZZ_CHECK (len > 0);
  FUZZ_CHECK (off >= w->start && off + len <= w->end);
  FUZZ_CHECK (off >= w->next);
  w->next = off + len;
}

static int
w_wait (Wait *w)
{
  g_mutex_lock (&w->lock);
  while (w->calls == 0)
    g_cond_wait (&w->cond, &w->lock);
  g_mutex_unlock (&w->lock);
  int err = w->err;
  g_mutex_clear (&w->lock);
  g_cond_clear (&w->cond);
  return err;
}

#define N_OPS 11

typedef struct {
  uint64_t transcript;        /* of the one-at-a-time phase */
  int err[N_OPS];
  uint8_t *rbuf[N_OPS];
  size_t rlen[N_OPS];
  int verdict;                /* concurrent phase: ops checked, -1 none */
  int reads_checked;          /* one-at-a-time reads matched the disk */
} Run;

/* ---- the concurrent phase ----
 * N_CONC operations chosen by a PRNG seeded from the input, all in flight
 * at once on a window of a few blocks: small unaligned writes (RMW),
 * aligned and block-crossing writes, zeroes, trims, reads. The disk is read
 * before and after; then byte by byte: a byte no write, zero or trim
 * covered is unchanged; a byte covered only by successful ones holds the
 * value of one of them (the last in some order); a failed one may or may
 * not have landed; under a trim anything goes. A read in the batch sees,
 * per byte, the old value or one of the covering writes'. This catches a
 * lost update (an RMW writing back the old block over a write that
 * overlapped it) and bytes the server never sent. */
#define N_CONC 8

typedef struct {
  char op;                    /* w write, z zero, t trim, r read */
  uint64_t off;
  uint32_t len;
  uint8_t *buf;               /* write data / read result */
  Wait w;
} Conc;

static uint64_t
rng_next (uint64_t *x)
{
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

/* May byte j hold v, given the ops in c (before: its value before)? */
static gboolean
conc_allowed (const Conc *c, int n, uint64_t j, uint8_t before, uint8_t v,
              gboolean is_final)
{
  gboolean covered = FALSE, failed = FALSE;
  for (int i = 0; i < n; i++) {
    if (c[i].op == 'r' || j < c[i].off || j >= c[i].off + c[i].len)
      continue;
    if (c[i].op == 't')
      return TRUE;            /* trimmed: unspecified */
    covered = TRUE;
    if (c[i].w.err)
      failed = TRUE;
    if (v == (c[i].op == 'z' ? 0 : c[i].buf[j - c[i].off]))
      return TRUE;
  }
  /* A read in flight may still see the old value; so may the final read
   * where nothing (or only something that failed) covered the byte. */
  return v == before && (!is_final || !covered || failed);
}

static int
run_concurrent (NbdPool *pool, const NbdExport *exp, uint64_t seed,
                uint8_t fill)
{
  uint32_t bs = MAX (exp->min_block, 512u);
  uint64_t win = MIN (exp->size, (uint64_t) bs * 4);
  if (win == 0)
    return -1;
  uint8_t *before = g_malloc (win), *after = g_malloc (win);
  int verdict = -1;
  if (nbdc_pool_pread_sync (pool, before, win, 0) != 0)
    goto out;
  Conc c[N_CONC];
  uint64_t x = seed | 1;
  for (int i = 0; i < N_CONC; i++) {
    static const char kinds[] = "wwwwzztr";
    char op = kinds[rng_next (&x) % 8];
    uint64_t off, len;
    unsigned shape = rng_next (&x) % 3;
    if (shape == 1 && win < bs)
      shape = 2;
    switch (shape) {
    case 0:                   /* small, inside one block (RMW) */
      off = rng_next (&x) % win;
      len = 1 + rng_next (&x) % MIN (16, win - off);
      break;
    case 1: {                 /* whole blocks */
      off = rng_next (&x) % (win / bs) * bs;
      uint64_t blocks = 1 + rng_next (&x) % 2;   /* not inside MIN () */
      len = MIN (win - off, bs * blocks);
      break;
    }
    default:                  /* anything, crossing blocks */
      off = rng_next (&x) % win;
      len = 1 + rng_next (&x) % (win - off);
      break;
    }
    c[i] = (Conc) { .op = op, .off = off, .len = len,
                    .w = { .start = off, .end = off + len, .next = off } };
    c[i].buf = g_malloc (len);
    if (op == 'r')
      memset (c[i].buf, fill, len);
    else
      for (uint64_t k = 0; k < len; k++)
        c[i].buf[k] = (uint8_t) (rng_next (&x) >> 32);
    g_mutex_init (&c[i].w.lock);
    g_cond_init (&c[i].w.cond);
  }
  for (int i = 0; i < N_CONC; i++) {
    Conc *o = &c[i];
    switch (o->op) {
    case 'w':
      nbdc_pool_pwrite (pool, o->buf, o->len, o->off, 0, w_done, &o->w);
      break;
    case 'z':
      nbdc_pool_zero (pool, o->len, o->off, 0, w_done, &o->w);
      break;
    case 't':
      nbdc_pool_trim (pool, o->len, o->off, 0, w_done, &o->w);
      break;
    case 'r':
      nbdc_pool_pread (pool, o->buf, o->len, o->off, w_done, &o->w);
      break;
    }
  }
  int failed = 0;
  for (int i = 0; i < N_CONC; i++) {
    c[i].w.err = w_wait (&c[i].w);
    failed += c[i].w.err != 0;
    if (g_getenv ("NBDFS_FUZZ_VERBOSE"))
      fprintf (stderr, "fuzz-pool: concurrent op %d: %c %" G_GUINT64_FORMAT
               "+%u: %s\n", i, c[i].op, c[i].off, c[i].len,
               c[i].w.err ? g_strerror (c[i].w.err) : "ok");
  }
  if (nbdc_pool_pread_sync (pool, after, win, 0) == 0) {
    for (uint64_t j = 0; j < win; j++)
      if (!conc_allowed (c, N_CONC, j, before[j], after[j], TRUE)) {
        fprintf (stderr, "fuzz-pool: byte %" G_GUINT64_FORMAT " is 0x%02x "
                 "after the concurrent batch (0x%02x before): no order of "
                 "the operations leaves that\n", j, after[j], before[j]);
        FUZZ_CHECK (!"lost or invented update");
      }
    for (int i = 0; i < N_CONC; i++)
      for (uint32_t k = 0; c[i].op == 'r' && !c[i].w.err && k < c[i].len; k++)
        if (!conc_allowed (c, N_CONC, c[i].off + k, before[c[i].off + k],
                           c[i].buf[k], FALSE)) {
          fprintf (stderr, "fuzz-pool: concurrent read %d: byte %"
                   G_GUINT64_FORMAT " is 0x%02x: neither old nor written\n",
                   i, c[i].off + k, c[i].buf[k]);
          FUZZ_CHECK (!"read returned bytes nobody wrote");
        }
    verdict = N_CONC - failed;
  }
  for (int i = 0; i < N_CONC; i++)
    g_free (c[i].buf);
out:
  g_free (before);
  g_free (after);
  return verdict;
}

static void
run_once (const uint8_t *data, size_t size, uint8_t fill, Run *run)
{
  Srv s = { .fz = { data, size }, .fd = -1,
            .transcript = 0xcbf29ce484222325ull };
  s.disk = g_malloc0 (MAX_SIZE);
  for (size_t i = 0; i < MAX_SIZE; i++)
    s.disk[i] = (uint8_t) (i * 31 + 7);
  GThread *th = g_thread_new ("fuzz-server", serve, &s);
  NbdcOptions opts = { 0 };
  opts.tls = NBDC_TLS_OFF;
  opts.handshake_timeout = 10;
  opts.addr.export_name = g_strdup ("");
  size_t alen = 1 + strlen (abstract_name + 1);
  opts.addr.socket_path = g_memdup2 (abstract_name, alen + 1);  /* NUL-terminated, as address.c makes them */
  opts.addr.socket_len = alen;
  /* The timeout is only a backstop: this server never stops mid-reply
   * without hanging up, and a request nbdfs lost would not time out. */
  NbdcPoolConfig cfg = { .connections = 1, .request_timeout = 10 };
  NbdExport exp = { 0 };
  GError *err = NULL;
  memset (run, 0, sizeof *run);
  NbdPool *pool = nbdc_pool_open (&opts, &cfg, &exp, &err);
  if (pool == NULL) {
    g_clear_error (&err);
    for (int i = 0; i < N_OPS; i++)
      run->err[i] = -1;
    run->verdict = -1;
    goto out;
  }
  uint64_t esz = exp.size;
  static uint8_t wdata[70000];
  for (size_t i = 0; i < sizeof wdata; i++)
    wdata[i] = (uint8_t) (i * 13 + 1);
  /* (op, offset, count): clamped to the export. */
  static const struct { char op; uint64_t off; uint32_t count; uint32_t flags; }
  ops[N_OPS] = {
    { 'r', 1, 1000, 0 },
    { 'w', 3, 600, NBD_CMD_FLAG_FUA },
    { 'r', ~0ull, 5000, 0 },                 /* the last 5000 bytes */
    { 'z', 100, 7000, 0 },
    { 't', 0, 4096, 0 },
    { 'b', 0, 65536, 0 },
    { 'c', 0, 4096, 0 },
    { 'w', 4095, 70000, 0 },
    { 'f', 0, 0, 0 },
    { 'r', 4095, 70000, 0 },
    { 'b', 513, 3000, NBD_CMD_FLAG_REQ_ONE },
  };
  for (int i = 0; i < N_OPS; i++) {
    uint64_t off = ops[i].off == ~0ull ? (esz > 5000 ? esz - 5000 : 0)
      : ops[i].off;
    uint32_t count = ops[i].count;
    if (off > esz)
      off = esz;
    if (count > esz - off)
      count = esz - off;
    Wait w = { .start = off, .end = off + count, .next = off };
    g_mutex_init (&w.lock);
    g_cond_init (&w.cond);
    switch (ops[i].op) {
    case 'r':
      run->rbuf[i] = g_malloc (count ? count : 1);
      run->rlen[i] = count;
      memset (run->rbuf[i], fill, count);
      nbdc_pool_pread (pool, run->rbuf[i], count, off, w_done, &w);
      break;
    case 'w':
      nbdc_pool_pwrite (pool, wdata, count, off, ops[i].flags, w_done, &w);
      break;
    case 'z':
      nbdc_pool_zero (pool, count, off, ops[i].flags, w_done, &w);
      break;
    case 't':
      nbdc_pool_trim (pool, count, off, ops[i].flags, w_done, &w);
      break;
    case 'c':
      nbdc_pool_cache (pool, count, off, w_done, &w);
      break;
    case 'b':
      nbdc_pool_block_status (pool, count, off, ops[i].flags, w_extent,
                              w_done, &w);
      break;
    case 'f':
      nbdc_pool_flush (pool, w_done, &w);
      break;
    }
    run->err[i] = w_wait (&w);
    /* One at a time, so the server (waiting for the next request, or
     * gone) holds still: a successful read returns exactly its disk. */
    if (ops[i].op == 'r' && run->err[i] == 0) {
      if (memcmp (run->rbuf[i], s.disk + off, count) != 0) {
        fprintf (stderr, "op %d: a successful read of %" G_GUINT64_FORMAT
                 "+%u differs from what the server has\n", i, off, count);
        FUZZ_CHECK (!"read returned bytes the server did not send");
      }
      run->reads_checked++;
    }
  }
  /* Every reply of that phase has been mixed in (the server mixes before
   * it sends); the concurrent phase's order depends on thread timing. */
  run->transcript = s.transcript;
  uint64_t seed = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; i++)
    seed = (seed ^ data[i]) * 0x100000001b3ull;
  run->verdict = run_concurrent (pool, &exp, seed, fill);
  nbdc_pool_close (pool);
out:
  nbdc_export_clear (&exp);
  nbdc_options_clear (&opts);
  g_thread_join (th);
  if (pool == NULL)
    run->transcript = s.transcript;
  g_free (s.disk);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  Run a, b;
  run_once (data, size, 0x00, &a);
  run_once (data, size, 0xff, &b);
  /* Same transcript: the client got the same bytes in the same order
   * (thread timing may reorder requests between runs; then no verdict). */
  gboolean same = a.transcript == b.transcript
    && memcmp (a.err, b.err, sizeof a.err) == 0;
  if (g_getenv ("NBDFS_FUZZ_VERBOSE"))
    fprintf (stderr, "fuzz-pool: transcripts %s\n", same ? "identical"
             : "differ (no verdict on read contents)");
  if (g_getenv ("NBDFS_FUZZ_VERBOSE"))
    fprintf (stderr, "fuzz-pool: concurrent: %d / %d ops ok and checked; "
             "%d / %d reads matched the server's disk\n", a.verdict,
             b.verdict, a.reads_checked, b.reads_checked);
  for (int i = 0; i < N_OPS; i++) {
    if (g_getenv ("NBDFS_FUZZ_VERBOSE"))
      fprintf (stderr, "fuzz-pool: op %d: %s / %s\n", i,
               a.err[i] > 0 ? g_strerror (a.err[i]) : a.err[i] ? "-" : "ok",
               b.err[i] > 0 ? g_strerror (b.err[i]) : b.err[i] ? "-" : "ok");
    if (same && a.rbuf[i] && a.err[i] == 0
        && memcmp (a.rbuf[i], b.rbuf[i], a.rlen[i]) != 0) {
      fprintf (stderr, "op %d: a successful read returned bytes the server "
               "never sent\n", i);
      FUZZ_CHECK (!"uninitialised bytes in a successful read");
    }
    g_free (a.rbuf[i]);
    g_free (b.rbuf[i]);
  }
  return 0;
}
