/* nbdfs — the block-size layer: any offset and length in, commands the
 * server accepts out (nbd-proto.md "Size constraints": offsets and lengths
 * are multiples of the minimum block size, payloads at most the maximum).
 *
 * - Reads: the aligned middle goes straight into the caller's buffer in
 *   max-payload pieces; an unaligned head or tail reads its covering block
 *   into a bounce buffer and copies the wanted bytes.
 * - Writes: the aligned middle is written directly; an unaligned edge is a
 *   read-modify-write of its block. RMWs of one block are serialised (a
 *   per-block busy table with a wait queue), so two concurrent unaligned
 *   writes into one block cannot lose either update.
 * - Zero: WRITE_ZEROES for the aligned middle, edges written as data.
 * - Trim: shrunk to whole blocks (trim is advisory).
 * - Cache, block status: widened to whole blocks; extents are clipped back
 *   to the range the caller asked about.
 * With a minimum block size of 1 all of this reduces to splitting.
 */
#include <errno.h>
#include <string.h>
#include "nbdclient/pool-internal.h"
#include "nbdclient/protocol.h"

/* Effect length cap for commands without payload (zero, trim, block
 * status): the spec lets us exceed the max payload there, but the compact
 * header keeps it a 32-bit field. */
#define MAX_EFFECT (1u << 30)

/* The largest minimum block size the spec allows (2^16). */
static const uint8_t zero_block[65536];

static uint64_t
round_down (uint64_t x, uint32_t b)
{
  return x - x % b;
}

static uint64_t
round_up (uint64_t x, uint32_t b)
{
  return round_down (x + b - 1, b);
}

static uint32_t
min_block (NbdPool *pool)
{
  return MAX (pool->exp.min_block, 1);
}

/* Range check shared by every call: inside the export, no wraparound. */
static gboolean
range_ok (NbdPool *pool, size_t count, uint64_t offset)
{
  return offset <= pool->exp.size && count <= pool->exp.size - offset;
}

/* The largest effect length, a multiple of bs, for one command without
 * payload. With extended headers the length field has 64 bits ("only when
 * length is used as an effect length will it utilize a full 64-bit
 * value"): a whole-disk trim, punch or status query is one request. A
 * zero with NO_HOLE stays in 1 GiB pieces: the server really writes
 * those bytes, and one reply to a multi-terabyte write would come long
 * after the request timeout (which counts time without any reply). */
static uint64_t
effect_cap (NbdPool *pool, uint16_t flags, uint32_t bs)
{
  if (pool->extended && !(flags & NBD_CMD_FLAG_NO_HOLE))
    return INT64_MAX - INT64_MAX % bs;
  return MAX_EFFECT - MAX_EFFECT % bs;
}

static void
send_part (NbdcParent *p, uint16_t type, uint16_t flags, uint64_t offset,
           uint64_t count, void *buf)
{
  pool_parent_add (p);
  NbdcCmd cmd = {
    .type = type, .flags = flags, .offset = offset, .count = count,
    .buf = buf, .done = pool_parent_part_done, .opaque = p,
  };
  pool_send_cmd (p->pool, &cmd);
}

/* Splits [offset, offset+count) into commands of at most max bytes. */
static void
send_split (NbdcParent *p, uint16_t type, uint16_t flags, uint64_t offset,
            uint64_t count, char *buf, uint64_t max)
{
  while (count > 0) {
    uint64_t n = MIN (count, max);
    send_part (p, type, flags, offset, n, buf);
    offset += n;
    count -= n;
    if (buf)
      buf += n;
  }
}

/* ---- reads ---- */

typedef struct {
  NbdcParent *parent;
  char *bounce;
  char *dst;
  size_t skip;                /* bytes of bounce before the wanted ones */
  size_t len;
} BounceRead;

static void
bounce_read_done (void *opaque, int err)
{
  BounceRead *b = opaque;
  if (!err)
    memcpy (b->dst, b->bounce + b->skip, b->len);
  pool_parent_part_done (b->parent, err);
  g_free (b->bounce);
  g_free (b);
}

/* Reads the aligned range [start, end) and copies [want, want+len). */
static void
bounce_read (NbdcParent *p, uint64_t start, uint64_t end, char *dst,
             uint64_t want, size_t len)
{
  BounceRead *b = g_new (BounceRead, 1);
  b->parent = p;
  b->bounce = g_malloc (end - start);
  b->dst = dst;
  b->skip = want - start;
  b->len = len;
  pool_parent_add (p);
  NbdcCmd cmd = {
    .type = NBD_CMD_READ, .offset = start, .count = end - start,
    .buf = b->bounce, .done = bounce_read_done, .opaque = b,
  };
  pool_send_cmd (p->pool, &cmd);
}

void
nbdc_pool_pread (NbdPool *pool, void *buf, size_t count, uint64_t offset,
                 NbdcDoneFn done, void *opaque)
{
  if (!range_ok (pool, count, offset)) {
    done (opaque, EINVAL);
    return;
  }
  if (count == 0) {
    done (opaque, 0);
    return;
  }
  uint32_t bs = min_block (pool);
  uint64_t end = offset + count;
  uint64_t a = round_up (offset, bs), b = round_down (end, bs);
  char *dst = buf;
  NbdcParent *p = pool_parent_new (pool, done, opaque);
  if (a > b || (a == b && (offset % bs || end % bs))) {
    /* No whole block inside: one bounce over the (at most two) blocks. */
    bounce_read (p, round_down (offset, bs), round_up (end, bs), dst,
                 offset, count);
  }
  else {
    if (offset < a)
      bounce_read (p, a - bs, a, dst, offset, a - offset);
    send_split (p, NBD_CMD_READ, 0, a, b - a, dst + (a - offset),
                pool->max_payload);
    if (end > b)
      bounce_read (p, b, b + bs, dst + (b - offset), b, end - b);
  }
  pool_parent_release (p);
}

/* ---- writes ---- */

/* One read-modify-write of the block at blk. */
typedef struct {
  NbdcParent *parent;
  NbdPool *pool;
  uint64_t blk;               /* block index */
  uint32_t bs;
  uint16_t flags;
  char *bounce;
  const char *src;            /* bytes to put at bounce + skip */
  size_t skip;
  size_t len;
} Rmw;

static void rmw_start (Rmw *r);

static void
rmw_end (Rmw *r, int err)
{
  NbdPool *pool = r->pool;
  Rmw *next = NULL;
  g_mutex_lock (&pool->lock);
  GQueue *waiters = g_hash_table_lookup (pool->rmw_busy, &r->blk);
  next = g_queue_pop_head (waiters);
  if (!next) {
    g_hash_table_remove (pool->rmw_busy, &r->blk);
    g_queue_free (waiters);
  }
  g_mutex_unlock (&pool->lock);
  pool_parent_part_done (r->parent, err);
  g_free (r->bounce);
  g_free (r);
  if (next)
    rmw_start (next);
}

static void
rmw_written (void *opaque, int err)
{
  rmw_end (opaque, err);
}

static void
rmw_read (void *opaque, int err)
{
  Rmw *r = opaque;
  if (err) {
    rmw_end (r, err);
    return;
  }
  memcpy (r->bounce + r->skip, r->src, r->len);
  NbdcCmd cmd = {
    .type = NBD_CMD_WRITE, .flags = r->flags, .offset = r->blk * r->bs,
    .count = r->bs, .buf = r->bounce, .done = rmw_written, .opaque = r,
  };
  pool_send_cmd (r->pool, &cmd);
}

static void
rmw_start (Rmw *r)
{
  NbdcCmd cmd = {
    .type = NBD_CMD_READ, .offset = r->blk * r->bs, .count = r->bs,
    .buf = r->bounce, .done = rmw_read, .opaque = r,
  };
  pool_send_cmd (r->pool, &cmd);
}

/* Takes the block (or queues behind the RMW that has it), then starts. */
static void
rmw_submit (NbdcParent *p, uint64_t blk, uint32_t bs, uint16_t flags,
            const char *src, size_t skip, size_t len)
{
  NbdPool *pool = p->pool;
  Rmw *r = g_new0 (Rmw, 1);
  r->parent = p;
  r->pool = pool;
  r->blk = blk;
  r->bs = bs;
  r->flags = flags;
  r->bounce = g_malloc (bs);
  r->src = src;
  r->skip = skip;
  r->len = len;
  pool_parent_add (p);

  g_mutex_lock (&pool->lock);
  GQueue *waiters = g_hash_table_lookup (pool->rmw_busy, &blk);
  if (waiters) {
    g_queue_push_tail (waiters, r);
    g_mutex_unlock (&pool->lock);
    return;
  }
  uint64_t *key = g_new (uint64_t, 1);
  *key = blk;
  g_hash_table_insert (pool->rmw_busy, key, g_queue_new ());
  g_mutex_unlock (&pool->lock);
  rmw_start (r);
}

static void
write_edges_and_middle (NbdcParent *p, const char *src, uint64_t count,
                        uint64_t offset, uint16_t flags)
{
  NbdPool *pool = p->pool;
  uint32_t bs = min_block (pool);
  uint64_t end = offset + count;
  uint64_t a = round_up (offset, bs), b = round_down (end, bs);
  if (round_down (offset, bs) == round_down (end - 1, bs)
      && (offset % bs || end % bs)) {
    rmw_submit (p, offset / bs, bs, flags, src, offset % bs, count);
    return;
  }
  if (offset < a)
    rmw_submit (p, offset / bs, bs, flags, src, offset % bs, a - offset);
  if (a < b)
    send_split (p, NBD_CMD_WRITE, flags, a, b - a,
                (char *) src + (a - offset), pool->max_payload);
  if (end > b)
    rmw_submit (p, b / bs, bs, flags, src + (b - offset), 0, end - b);
}

/* Common checks for write-type calls. Returns FALSE after calling done. */
static gboolean
write_ok (NbdPool *pool, size_t count, uint64_t offset, NbdcDoneFn done,
          void *opaque)
{
  if (pool->read_only) {
    done (opaque, EROFS);
    return FALSE;
  }
  if (!range_ok (pool, count, offset)) {
    done (opaque, EINVAL);
    return FALSE;
  }
  if (count == 0) {
    done (opaque, 0);
    return FALSE;
  }
  return TRUE;
}

/* FUA: pass it on if the server has it, else flush afterwards. */
static uint16_t
fua_flags (NbdPool *pool, NbdcParent *p, uint32_t flags)
{
  if (!(flags & NBD_CMD_FLAG_FUA))
    return 0;
  if (pool->exp.eflags & NBD_FLAG_SEND_FUA)
    return NBD_CMD_FLAG_FUA;
  if (pool->exp.eflags & NBD_FLAG_SEND_FLUSH)
    p->flush_after = TRUE;
  return 0;
}

void
nbdc_pool_pwrite (NbdPool *pool, const void *buf, size_t count,
                  uint64_t offset, uint32_t flags,
                  NbdcDoneFn done, void *opaque)
{
  if (!write_ok (pool, count, offset, done, opaque))
    return;
  NbdcParent *p = pool_parent_new (pool, done, opaque);
  uint16_t f = fua_flags (pool, p, flags);
  write_edges_and_middle (p, buf, count, offset, f);
  pool_parent_release (p);
}

void
nbdc_pool_zero (NbdPool *pool, size_t count, uint64_t offset,
                uint32_t flags, NbdcDoneFn done, void *opaque)
{
  if (!write_ok (pool, count, offset, done, opaque))
    return;
  uint16_t eflags = pool->exp.eflags;
  if ((flags & NBD_CMD_FLAG_FAST_ZERO)
      && (!(eflags & NBD_FLAG_SEND_WRITE_ZEROES)
          || !(eflags & NBD_FLAG_SEND_FAST_ZERO))) {
    done (opaque, ENOTSUP);
    return;
  }
  NbdcParent *p = pool_parent_new (pool, done, opaque);
  uint16_t f = fua_flags (pool, p, flags);
  if (eflags & NBD_FLAG_SEND_WRITE_ZEROES) {
    f |= flags & (NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO);
    /* Edges go through RMW with zeroes as the source. */
    uint32_t bs = min_block (pool);
    uint64_t end = offset + count;
    uint64_t a = round_up (offset, bs), b = round_down (end, bs);
    if (round_down (offset, bs) == round_down (end - 1, bs)
        && (offset % bs || end % bs))
      rmw_submit (p, offset / bs, bs, f & NBD_CMD_FLAG_FUA,
                  (const char *) zero_block, offset % bs, count);
    else {
      if (offset < a)
        rmw_submit (p, offset / bs, bs, f & NBD_CMD_FLAG_FUA,
                    (const char *) zero_block, offset % bs, a - offset);
      if (a < b)
        send_split (p, NBD_CMD_WRITE_ZEROES, f, a, b - a, NULL,
                    effect_cap (pool, f, bs));
      if (end > b)
        rmw_submit (p, b / bs, bs, f & NBD_CMD_FLAG_FUA,
                    (const char *) zero_block, 0, end - b);
    }
  }
  else {
    /* No WRITE_ZEROES: write a shared zero buffer, piece by piece. */
    size_t piece = MIN (count, (size_t) pool->max_payload);
    char *zeroes = g_malloc0 (piece);
    p->owned = zeroes;
    uint64_t off = offset;
    size_t left = count;
    while (left > 0) {
      size_t n = MIN (left, piece);
      write_edges_and_middle (p, zeroes, n, off, f);
      off += n;
      left -= n;
    }
  }
  pool_parent_release (p);
}

void
nbdc_pool_trim (NbdPool *pool, size_t count, uint64_t offset,
                uint32_t flags, NbdcDoneFn done, void *opaque)
{
  if (!write_ok (pool, count, offset, done, opaque))
    return;
  if (!(pool->exp.eflags & NBD_FLAG_SEND_TRIM)) {
    done (opaque, ENOTSUP);
    return;
  }
  uint32_t bs = min_block (pool);
  uint64_t a = round_up (offset, bs), b = round_down (offset + count, bs);
  if (a >= b) {
    done (opaque, 0);
    return;
  }
  NbdcParent *p = pool_parent_new (pool, done, opaque);
  uint16_t f = fua_flags (pool, p, flags);
  send_split (p, NBD_CMD_TRIM, f, a, b - a, NULL, effect_cap (pool, 0, bs));
  pool_parent_release (p);
}

void
nbdc_pool_cache (NbdPool *pool, size_t count, uint64_t offset,
                 NbdcDoneFn done, void *opaque)
{
  if (!range_ok (pool, count, offset)) {
    done (opaque, EINVAL);
    return;
  }
  if (!(pool->exp.eflags & NBD_FLAG_SEND_CACHE)) {
    done (opaque, ENOTSUP);
    return;
  }
  if (count == 0) {
    done (opaque, 0);
    return;
  }
  uint32_t bs = min_block (pool);
  uint64_t a = round_down (offset, bs), b = round_up (offset + count, bs);
  NbdcParent *p = pool_parent_new (pool, done, opaque);
  send_split (p, NBD_CMD_CACHE, 0, a, b - a, NULL, pool->max_payload);
  pool_parent_release (p);
}

/* ---- block status ---- */

typedef struct {
  NbdcExtentFn extent;
  void *opaque;
  uint64_t start, end;        /* what the caller asked about */
} ExtentClip;

static void
extent_clipped (void *opaque, uint64_t offset, uint64_t length,
                uint32_t flags)
{
  NbdcParent *p = opaque;
  ExtentClip *c = p->owned;
  uint64_t s = MAX (offset, c->start), e = MIN (offset + length, c->end);
  if (s < e)
    c->extent (c->opaque, s, e - s, flags);
}

void
nbdc_pool_block_status (NbdPool *pool, size_t count, uint64_t offset,
                        uint32_t flags, NbdcExtentFn extent,
                        NbdcDoneFn done, void *opaque)
{
  if (!range_ok (pool, count, offset)) {
    done (opaque, EINVAL);
    return;
  }
  if (!pool->base_allocation) {
    done (opaque, ENOTSUP);
    return;
  }
  if (count == 0) {
    done (opaque, 0);
    return;
  }
  uint32_t bs = min_block (pool);
  uint64_t a = round_down (offset, bs);
  uint64_t b = round_up (offset + count, bs);
  /* One command; the server may answer for less than asked anyway, so
   * callers loop from the end of the last extent. */
  uint64_t cap = effect_cap (pool, 0, bs);
  if (b - a > cap)
    b = a + cap;
  NbdcParent *p = pool_parent_new (pool, done, opaque);
  ExtentClip *c = g_new (ExtentClip, 1);
  *c = (ExtentClip) { extent, opaque, offset, offset + count };
  p->owned = c;
  pool_parent_add (p);
  NbdcCmd cmd = {
    .type = NBD_CMD_BLOCK_STATUS, .flags = flags & NBD_CMD_FLAG_REQ_ONE,
    .offset = a, .count = b - a, .extent = extent_clipped,
    .done = pool_parent_part_done, .opaque = p,
  };
  pool_send_cmd (pool, &cmd);
  pool_parent_release (p);
}
