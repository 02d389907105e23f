/* nbdc-driver — a small CLI over the nbdclient pool, for tests.
 *
 *   nbdc-driver [-C N] [-t SECS] [-q DEPTH] [-R SECS] [-r] [-k] [-v] [-E]
 *               ADDRESS CMD ARGS...
 * (-C connections, -t request timeout, -q depth per connection, -R keep
 * reconnecting for SECS, -r read-only, -k keep going, -v debug log, -E no
 * extended headers)
 *
 * Commands run in order (several may follow one another); each prints one
 * result line (extents: one line per extent, then "end"):
 *   info                        size=N min=N pref=N max=N structured=0|1
 *                               base_allocation=0|1 connections=N eflags=0xN
 *                               extended=0|1
 *   write-pattern OFF LEN SEED  write the pattern byte(o) = f(o, SEED)  -> ok
 *   check-pattern OFF LEN SEED  read and compare with the pattern -> ok
 *   read-md5 OFF LEN            -> md5 hex of the bytes read
 *   read-to FILE OFF LEN        -> ok (bytes written to FILE)
 *   write-from FILE OFF [flags=fua]   whole FILE at OFF -> ok
 *   zero OFF LEN [flags=fua,nohole,fast]   trim OFF LEN [flags=fua]
 *   cache OFF LEN
 *   flush                       -> ok
 *   extents OFF LEN             "OFFSET LENGTH FLAGS" lines, merged, "end"
 *   parallel-reads N OFF LEN    N reads at once ([OFF+i*LEN, +LEN))
 *                               -> "ok elapsed_ms=N"
 *   parallel-writes N OFF LEN SEED   N pattern writes at once -> ok
 *   rmw-race N OFF              N concurrent 1-byte writes at OFF..OFF+N-1,
 *                               read back and checked -> ok
 *   zero-race N OFF BS          N times: the block [OFF, +BS) filled,
 *                               then at once a 10-byte write at OFF+100
 *                               (an RMW when BS is the minimum block) and
 *                               a zero of the block; the block must read
 *                               as one serial order -> ok
 *   read-while-busy OFF LEN SECS   one read of [OFF, +LEN) in the
 *                               background while 512-byte reads at 0 keep
 *                               the connection busy, until it ends ->
 *                               "elapsed_ms=N" then its result; after SECS
 *                               unfinished: error ETIMEDOUT, exit at once
 *   sleep SECS                  (for restart tests)
 *   unlink FILE                 remove FILE (flips nbdkit error-file=)
 * A failing command prints "CMD: error ENAME: text" and, without -k, ends
 * the run with exit status 1 (with -k: carries on, exits 1 at the end).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include "nbdclient/pool.h"
#include "nbdclient/protocol.h"

static NbdPool *pool;
static gboolean keep_going;
static int failures;

static uint8_t
pattern (uint64_t o, unsigned seed)
{
  return (uint8_t) ((o * 31) ^ (o >> 9) ^ (seed * 101));
}

static uint64_t
num (const char *s)
{
  char *end;
  errno = 0;
  unsigned long long v = strtoull (s, &end, 0);
  if (errno || end == s) {
    fprintf (stderr, "nbdc-driver: bad number %s\n", s);
    exit (2);
  }
  switch (*end) {
  case 'k': case 'K': v <<= 10; break;
  case 'm': case 'M': v <<= 20; break;
  case 'g': case 'G': v <<= 30; break;
  }
  return v;
}

static gboolean
report (const char *cmd, int err)
{
  if (!err)
    return TRUE;
  printf ("%s: error %s: %s\n", cmd, strerrorname_np (err), strerror (err));
  fflush (stdout);
  failures++;
  if (!keep_going) {
    nbdc_pool_close (pool);
    exit (1);
  }
  return FALSE;
}

/* ---- waiting for many requests ---- */

typedef struct {
  GMutex lock;
  GCond cond;
  int left;
  int err;
} Batch;

static void
batch_done (void *opaque, int err)
{
  Batch *b = opaque;
  g_mutex_lock (&b->lock);
  if (err && !b->err)
    b->err = err;
  if (--b->left == 0)
    g_cond_signal (&b->cond);
  g_mutex_unlock (&b->lock);
}

static void
batch_init (Batch *b, int n)
{
  g_mutex_init (&b->lock);
  g_cond_init (&b->cond);
  b->left = n;
  b->err = 0;
}

static int
batch_wait (Batch *b)
{
  g_mutex_lock (&b->lock);
  while (b->left > 0)
    g_cond_wait (&b->cond, &b->lock);
  g_mutex_unlock (&b->lock);
  return b->err;
}

/* ---- extents ---- */

typedef struct {
  uint64_t off, len;
  uint32_t flags;
  gboolean have;
  uint64_t next;
} ExtState;

typedef struct {
  Batch b;
  ExtState s;
} ExtCall;

static void
ext_print (ExtState *s)
{
  if (s->have)
    printf ("%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT " %u\n",
            s->off, s->len, s->flags);
}

static void
ext_add (void *opaque, uint64_t off, uint64_t len, uint32_t flags)
{
  ExtCall *c = opaque;
  ExtState *s = &c->s;
  if (s->have && s->off + s->len == off && s->flags == flags)
    s->len += len;
  else {
    ext_print (s);
    s->off = off;
    s->len = len;
    s->flags = flags;
    s->have = TRUE;
  }
  s->next = off + len;
}

static void
ext_done (void *opaque, int err)
{
  batch_done (&((ExtCall *) opaque)->b, err);
}

static int
cmd_extents (uint64_t off, uint64_t len)
{
  ExtCall c = { 0 };
  uint64_t end = off + len;
  uint64_t pos = off;
  while (pos < end) {
    batch_init (&c.b, 1);
    c.s.next = pos;
    nbdc_pool_block_status (pool, end - pos, pos, 0, ext_add, ext_done, &c);
    int err = batch_wait (&c.b);
    if (err)
      return err;
    if (c.s.next <= pos) {
      fprintf (stderr, "nbdc-driver: block status made no progress\n");
      return EIO;
    }
    pos = c.s.next;
  }
  ext_print (&c.s);
  printf ("end\n");
  return 0;
}

/* ---- commands ---- */

static int
do_read (void *buf, uint64_t len, uint64_t off)
{
  return nbdc_pool_pread_sync (pool, buf, len, off);
}

static uint32_t
parse_flags (const char *s)
{
  uint32_t f = 0;
  if (!s)
    return 0;
  if (strstr (s, "fua"))
    f |= NBD_CMD_FLAG_FUA;
  if (strstr (s, "nohole"))
    f |= NBD_CMD_FLAG_NO_HOLE;
  if (strstr (s, "fast"))
    f |= NBD_CMD_FLAG_FAST_ZERO;
  return f;
}

static void
usage (void)
{
  fprintf (stderr, "usage: nbdc-driver [-C N] [-t SECS] [-q DEPTH] "
           "[-R SECS] [-r] [-k] [-v] [-E] ADDRESS COMMAND ARGS...\n");
  exit (2);
}

#define NEED(n) do { if (i + (n) >= argc) usage (); } while (0)

int
main (int argc, char **argv)
{
  NbdcPoolConfig cfg = { 0 };
  int opt;
  signal (SIGPIPE, SIG_IGN);
  /* stdout carries results; every log line goes to stderr. */
  g_log_writer_default_set_use_stderr (TRUE);
  gboolean no_extended = FALSE;
  while ((opt = getopt (argc, argv, "+C:t:q:R:rkvE")) != -1) {
    switch (opt) {
    case 'C': cfg.connections = num (optarg); break;
    case 't': cfg.request_timeout = num (optarg); break;
    case 'q': cfg.max_in_flight = num (optarg); break;
    case 'R': cfg.reconnect = num (optarg); break;
    case 'r': cfg.read_only = TRUE; break;
    case 'k': keep_going = TRUE; break;
    case 'v': g_setenv ("G_MESSAGES_DEBUG", "all", TRUE); break;
    case 'E': no_extended = TRUE; break;
    default: usage ();
    }
  }
  if (optind + 1 >= argc)
    usage ();

  NbdcOptions opts = { 0 };
  GError *error = NULL;
  if (!nbdc_address_parse (argv[optind], &opts.addr, &error)) {
    fprintf (stderr, "nbdc-driver: %s\n", error->message);
    g_error_free (error);
    nbdc_options_clear (&opts);
    return 2;
  }
  opts.tls = opts.addr.tls == NBDC_TLS_REQUIRE ? NBDC_TLS_REQUIRE
    : NBDC_TLS_OFF;
  opts.no_extended = no_extended;
  NbdExport exp = { 0 };
  pool = nbdc_pool_open (&opts, &cfg, &exp, &error);
  if (!pool) {
    /* Freed so valgrind runs of the tests show only real leaks. */
    fprintf (stderr, "nbdc-driver: %s\n", error->message);
    g_error_free (error);
    nbdc_options_clear (&opts);
    return 1;
  }

  for (int i = optind + 1; i < argc; i++) {
    const char *cmd = argv[i];
    int err = 0;
    if (!strcmp (cmd, "info")) {
      printf ("size=%" G_GUINT64_FORMAT " min=%u pref=%u max=%u "
              "structured=%d base_allocation=%d connections=%u "
              "eflags=0x%x extended=%d\n", exp.size, exp.min_block,
              exp.pref_block, exp.max_block, exp.structured,
              exp.base_allocation, nbdc_pool_connections (pool), exp.eflags,
              exp.extended);
    }
    else if (!strcmp (cmd, "write-pattern")
             || !strcmp (cmd, "check-pattern")) {
      NEED (3);
      uint64_t off = num (argv[++i]), len = num (argv[++i]);
      unsigned seed = num (argv[++i]);
      uint8_t *buf = g_malloc (len ? len : 1);
      if (cmd[0] == 'w') {
        for (uint64_t k = 0; k < len; k++)
          buf[k] = pattern (off + k, seed);
        err = nbdc_pool_pwrite_sync (pool, buf, len, off, 0);
        if (report (cmd, err))
          printf ("ok\n");
      }
      else {
        err = do_read (buf, len, off);
        if (report (cmd, err)) {
          uint64_t k;
          for (k = 0; k < len; k++)
            if (buf[k] != pattern (off + k, seed))
              break;
          if (k < len) {
            printf ("%s: mismatch at %" G_GUINT64_FORMAT "\n", cmd,
                    off + k);
            failures++;
          }
          else
            printf ("ok\n");
        }
      }
      g_free (buf);
    }
    else if (!strcmp (cmd, "read-md5")) {
      NEED (2);
      uint64_t off = num (argv[++i]), len = num (argv[++i]);
      uint8_t *buf = g_malloc (len ? len : 1);
      err = do_read (buf, len, off);
      if (report (cmd, err)) {
        g_autofree char *sum = g_compute_checksum_for_data (G_CHECKSUM_MD5,
                                                            buf, len);
        printf ("%s\n", sum);
      }
      g_free (buf);
    }
    else if (!strcmp (cmd, "read-to")) {
      NEED (3);
      const char *file = argv[++i];
      uint64_t off = num (argv[++i]), len = num (argv[++i]);
      uint8_t *buf = g_malloc (len ? len : 1);
      err = do_read (buf, len, off);
      if (report (cmd, err)) {
        GError *e = NULL;
        if (!g_file_set_contents (file, (char *) buf, len, &e)) {
          fprintf (stderr, "nbdc-driver: %s\n", e->message);
          return 1;
        }
        printf ("ok\n");
      }
      g_free (buf);
    }
    else if (!strcmp (cmd, "write-from")) {
      NEED (2);
      const char *file = argv[++i];
      uint64_t off = num (argv[++i]);
      uint32_t flags = 0;
      if (i + 1 < argc && g_str_has_prefix (argv[i + 1], "flags="))
        flags = parse_flags (argv[++i]);
      char *data;
      gsize len;
      GError *e = NULL;
      if (!g_file_get_contents (file, &data, &len, &e)) {
        fprintf (stderr, "nbdc-driver: %s\n", e->message);
        return 1;
      }
      err = nbdc_pool_pwrite_sync (pool, data, len, off, flags);
      if (report (cmd, err))
        printf ("ok\n");
      g_free (data);
    }
    else if (!strcmp (cmd, "zero") || !strcmp (cmd, "trim")
             || !strcmp (cmd, "cache")) {
      NEED (2);
      uint64_t off = num (argv[++i]), len = num (argv[++i]);
      uint32_t flags = 0;
      if (i + 1 < argc && g_str_has_prefix (argv[i + 1], "flags="))
        flags = parse_flags (argv[++i]);
      Batch b;
      batch_init (&b, 1);
      if (cmd[0] == 'z')
        nbdc_pool_zero (pool, len, off, flags, batch_done, &b);
      else if (cmd[0] == 't')
        nbdc_pool_trim (pool, len, off, flags, batch_done, &b);
      else
        nbdc_pool_cache (pool, len, off, batch_done, &b);
      err = batch_wait (&b);
      if (report (cmd, err))
        printf ("ok\n");
    }
    else if (!strcmp (cmd, "flush")) {
      err = nbdc_pool_flush_sync (pool);
      if (report (cmd, err))
        printf ("ok\n");
    }
    else if (!strcmp (cmd, "extents")) {
      NEED (2);
      uint64_t off = num (argv[++i]), len = num (argv[++i]);
      err = cmd_extents (off, len);
      report (cmd, err);
    }
    else if (!strcmp (cmd, "parallel-reads")
             || !strcmp (cmd, "parallel-writes")) {
      gboolean wr = cmd[9] == 'w';
      NEED (wr ? 4 : 3);
      int n = num (argv[++i]);
      uint64_t off = num (argv[++i]), len = num (argv[++i]);
      unsigned seed = wr ? num (argv[++i]) : 0;
      uint8_t *buf = g_malloc ((size_t) n * len + 1);
      if (wr)
        for (uint64_t k = 0; k < n * len; k++)
          buf[k] = pattern (off + k, seed);
      Batch b;
      batch_init (&b, n);
      gint64 t0 = g_get_monotonic_time ();
      for (int k = 0; k < n; k++) {
        if (wr)
          nbdc_pool_pwrite (pool, buf + k * len, len, off + k * len, 0,
                            batch_done, &b);
        else
          nbdc_pool_pread (pool, buf + k * len, len, off + k * len,
                           batch_done, &b);
      }
      err = batch_wait (&b);
      gint64 ms = (g_get_monotonic_time () - t0) / 1000;
      if (report (cmd, err))
        printf ("ok elapsed_ms=%" G_GINT64_FORMAT "\n", ms);
      g_free (buf);
    }
    else if (!strcmp (cmd, "rmw-race")) {
      NEED (2);
      int n = num (argv[++i]);
      uint64_t off = num (argv[++i]);
      uint8_t *vals = g_malloc (n);
      Batch b;
      batch_init (&b, n);
      for (int k = 0; k < n; k++) {
        vals[k] = (uint8_t) (0x80 | (k * 13));
        nbdc_pool_pwrite (pool, &vals[k], 1, off + k, 0, batch_done, &b);
      }
      err = batch_wait (&b);
      if (report (cmd, err)) {
        uint8_t *got = g_malloc (n);
        err = do_read (got, n, off);
        if (report (cmd, err)) {
          if (memcmp (got, vals, n) != 0) {
            int k = 0;
            while (got[k] == vals[k])
              k++;
            printf ("%s: lost update at %" G_GUINT64_FORMAT "\n", cmd,
                    off + k);
            failures++;
          }
          else
            printf ("ok\n");
        }
        g_free (got);
      }
      g_free (vals);
    }
    else if (!strcmp (cmd, "zero-race")) {
      NEED (3);
      int n = num (argv[++i]);
      uint64_t off = num (argv[++i]);
      size_t bs = num (argv[++i]);
      uint8_t *fill = g_malloc (bs), *got = g_malloc (bs);
      uint8_t ten[10];
      int k;
      for (k = 0; k < n && !err; k++) {
        for (size_t j = 0; j < bs; j++)
          fill[j] = pattern (off + j, k + 1) | 1;     /* never zero */
        memset (ten, 0x40 + k % 64, sizeof ten);
        err = nbdc_pool_pwrite_sync (pool, fill, bs, off, 0);
        Batch b;
        batch_init (&b, 2);
        if (k % 2) {
          nbdc_pool_zero (pool, bs, off, 0, batch_done, &b);
          nbdc_pool_pwrite (pool, ten, sizeof ten, off + 100, 0, batch_done,
                            &b);
        }
        else {
          nbdc_pool_pwrite (pool, ten, sizeof ten, off + 100, 0, batch_done,
                            &b);
          nbdc_pool_zero (pool, bs, off, 0, batch_done, &b);
        }
        int e = batch_wait (&b);
        err = err ? err : e ? e : do_read (got, bs, off);
        if (err)
          break;
        /* Zero last: all zero. Write last: zeroes with the ten bytes. */
        gboolean zero_last = TRUE, write_last = TRUE;
        for (size_t j = 0; j < bs; j++) {
          zero_last &= got[j] == 0;
          write_last &= got[j] == (j >= 100 && j < 110 ? ten[0] : 0);
        }
        if (!zero_last && !write_last) {
          printf ("%s: iteration %d: the block is neither order of the "
                  "two requests (a write was lost)\n", cmd, k);
          failures++;
          break;
        }
      }
      if (report (cmd, err) && k == n)
        printf ("ok\n");
      g_free (fill);
      g_free (got);
    }
    else if (!strcmp (cmd, "unlink")) {
      NEED (1);
      if (unlink (argv[++i]) != 0) {
        perror (argv[i]);
        return 2;
      }
      printf ("ok\n");
    }
    else if (!strcmp (cmd, "read-while-busy")) {
      NEED (3);
      uint64_t off = num (argv[i + 1]), len = num (argv[i + 2]);
      gint64 secs = num (argv[i + 3]);
      i += 3;
      static Batch b;         /* may outlive the command (ETIMEDOUT) */
      char *buf = g_malloc (len);
      char small[512];
      batch_init (&b, 1);
      gint64 start = g_get_monotonic_time ();
      nbdc_pool_pread (pool, buf, len, off, batch_done, &b);
      for (;;) {
        g_mutex_lock (&b.lock);
        gboolean over = b.left == 0;
        g_mutex_unlock (&b.lock);
        if (over)
          break;
        if (g_get_monotonic_time () - start > secs * G_USEC_PER_SEC) {
          printf ("read-while-busy: error ETIMEDOUT: still unanswered after "
                  "%" G_GINT64_FORMAT " s\n", secs);
          fflush (stdout);
          _exit (1);
        }
        if (nbdc_pool_pread_sync (pool, small, sizeof small, 0) != 0)
          g_usleep (10000);
      }
      printf ("elapsed_ms=%" G_GINT64_FORMAT "\n",
              (g_get_monotonic_time () - start) / 1000);
      if (report (cmd, batch_wait (&b)))
        printf ("ok\n");
      g_free (buf);
    }
    else if (!strcmp (cmd, "sleep")) {
      NEED (1);
      g_usleep (num (argv[++i]) * G_USEC_PER_SEC);
      printf ("ok\n");
    }
    else {
      fprintf (stderr, "nbdc-driver: unknown command %s\n", cmd);
      nbdc_pool_close (pool);
      return 2;
    }
    fflush (stdout);
  }
  int err = nbdc_pool_close (pool);
  if (err) {
    printf ("close: error %s: %s\n", strerrorname_np (err), strerror (err));
    failures++;
  }
  nbdc_export_clear (&exp);
  nbdc_options_clear (&opts);
  return failures ? 1 : 0;
}
