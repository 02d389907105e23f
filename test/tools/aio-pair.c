/* aio-pair — two O_DIRECT writes in flight on one block at once, through
 * Linux AIO (raw io_setup/io_submit/io_getevents syscalls, no libaio).
 *
 *   aio-pair FILE BLOCK_OFFSET BLOCK_SIZE SMALL_OFFSET SMALL_LEN ITERATIONS
 *
 * Each iteration submits, in one io_submit call, an aligned write of the
 * whole block [BLOCK_OFFSET, +BLOCK_SIZE) and a SMALL_LEN-byte write at
 * SMALL_OFFSET inside it (the order of the two alternates), with data that
 * differs every iteration; waits for both; then reads the block back
 * (O_DIRECT) and checks that it equals one of the two serial orders: the
 * big write alone (small first) or the big write with the small bytes on
 * top (big first). Why AIO: the kernel serialises synchronous O_DIRECT
 * writers on one FUSE file (libfuse 3.14), so two threads doing pwrite()
 * never overlap; two AIO writes do.
 * Prints "ok iterations=N big_last=A small_last=B" (exit 0) or the first
 * mismatch (exit 1); 2 on usage or system errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/aio_abi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void
die (const char *what)
{
  fprintf (stderr, "aio-pair: %s: %s\n", what, strerror (errno));
  exit (2);
}

static uint8_t
byte (uint64_t i, uint64_t pos, unsigned salt)
{
  uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ (pos * 0xbf58476d1ce4e5b9ull)
    ^ salt;
  return (uint8_t) (x >> 29 ^ x);
}

int
main (int argc, char **argv)
{
  if (argc != 7) {
    fprintf (stderr, "usage: aio-pair FILE BLOCK_OFFSET BLOCK_SIZE "
             "SMALL_OFFSET SMALL_LEN ITERATIONS\n");
    return 2;
  }
  const char *file = argv[1];
  uint64_t boff = strtoull (argv[2], NULL, 0);
  size_t bs = strtoull (argv[3], NULL, 0);
  uint64_t soff = strtoull (argv[4], NULL, 0);
  size_t slen = strtoull (argv[5], NULL, 0);
  uint64_t iters = strtoull (argv[6], NULL, 0);
  if (bs == 0 || bs % 512 || slen == 0 || soff < boff
      || soff + slen > boff + bs) {
    fprintf (stderr, "aio-pair: the small write must lie inside the block\n");
    return 2;
  }
  int fd = open (file, O_RDWR | O_DIRECT);
  if (fd < 0)
    die (file);
  uint8_t *big, *small, *back, *want_a, *want_b;
  if (posix_memalign ((void **) &big, 4096, bs)
      || posix_memalign ((void **) &small, 4096, slen < 4096 ? 4096 : slen)
      || posix_memalign ((void **) &back, 4096, bs))
    die ("posix_memalign");
  want_a = malloc (bs);
  want_b = malloc (bs);
  aio_context_t ctx = 0;
  if (syscall (SYS_io_setup, 2, &ctx) < 0)
    die ("io_setup");

  uint64_t big_last = 0, small_last = 0;
  for (uint64_t i = 0; i < iters; i++) {
    for (size_t k = 0; k < bs; k++)
      big[k] = byte (i, k, 1);
    for (size_t k = 0; k < slen; k++)
      small[k] = byte (i, k, 2);
    /* Small first, then big: the big write alone. Big first: both. */
    memcpy (want_a, big, bs);
    memcpy (want_b, big, bs);
    memcpy (want_b + (soff - boff), small, slen);

    struct iocb cb[2] = { 0 };
    cb[0].aio_fildes = fd;
    cb[0].aio_lio_opcode = IOCB_CMD_PWRITE;
    cb[0].aio_buf = (uintptr_t) big;
    cb[0].aio_nbytes = bs;
    cb[0].aio_offset = boff;
    cb[0].aio_data = 0;
    cb[1] = cb[0];
    cb[1].aio_buf = (uintptr_t) small;
    cb[1].aio_nbytes = slen;
    cb[1].aio_offset = soff;
    cb[1].aio_data = 1;
    struct iocb *list[2] = { &cb[i % 2], &cb[1 - i % 2] };
    long n = syscall (SYS_io_submit, ctx, 2, list);
    if (n != 2) {
      if (n >= 0)
        errno = EAGAIN;
      die ("io_submit");
    }
    struct io_event ev[2];
    int got = 0;
    while (got < 2) {
      struct timespec ts = { 30, 0 };
      long r = syscall (SYS_io_getevents, ctx, 1, 2 - got, ev + got, &ts);
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0) {
        if (r == 0)
          errno = ETIMEDOUT;
        die ("io_getevents");
      }
      got += r;
    }
    for (int k = 0; k < 2; k++) {
      size_t want = ev[k].data ? slen : bs;
      if (ev[k].res != (int64_t) want) {
        fprintf (stderr, "aio-pair: iteration %" PRIu64 ": %s write "
                 "returned %lld (want %zu)\n", i, ev[k].data ? "small" : "big",
                 (long long) ev[k].res, want);
        return 1;
      }
    }
    if (pread (fd, back, bs, boff) != (ssize_t) bs)
      die ("pread");
    if (memcmp (back, want_a, bs) == 0)
      big_last++;
    else if (memcmp (back, want_b, bs) == 0)
      small_last++;
    else {
      size_t k = 0;
      while (k < bs && (back[k] == want_a[k] || back[k] == want_b[k]))
        k++;
      fprintf (stderr, "aio-pair: iteration %" PRIu64 ": the block is "
               "neither serial order of the two writes (first bad byte at "
               "block offset %zu: 0x%02x, want 0x%02x or 0x%02x); a write "
               "was lost\n", i, k, k < bs ? back[k] : 0,
               k < bs ? want_a[k] : 0, k < bs ? want_b[k] : 0);
      printf ("lost iteration=%" PRIu64 "\n", i);
      return 1;
    }
  }
  syscall (SYS_io_destroy, ctx);
  close (fd);
  /* Freed so that LeakSanitizer (make check-asan builds the tools too)
   * has nothing to report on success. */
  free (big);
  free (small);
  free (back);
  free (want_a);
  free (want_b);
  printf ("ok iterations=%" PRIu64 " big_last=%" PRIu64 " small_last=%"
          PRIu64 "\n", iters, big_last, small_last);
  return 0;
}
