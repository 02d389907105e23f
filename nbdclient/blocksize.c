/* nbdfs — the block-size layer: any offset and length in, commands the
 * server accepts out (nbd-proto.md "Size constraints": offset and length
 * multiples of the minimum block size, offset + length within the export,
 * payloads at most the maximum).
 *
 * - The export is addressable up to pool->size, its size rounded down to
 *   the minimum block size (see nbdc_pool_open): a tail shorter than a
 *   block cannot be reached by any request the spec allows.
 * - Reads: the aligned middle goes straight into the caller's buffer in
 *   max-payload pieces; an unaligned head or tail reads its one covering
 *   block into a bounce buffer and copies the wanted bytes (a block is at
 *   most 64 KiB and never above the maximum payload, so no bounce read
 *   exceeds it, however the request falls).
 * - Writes: the aligned middle is written directly in max-payload pieces;
 *   an unaligned edge is a read-modify-write (RMW) of its one block.
 * - Zero: WRITE_ZEROES for the aligned middle, edges RMW'd with zeroes.
 * - Trim: shrunk to whole blocks (trim is advisory).
 * - Cache, block status: widened to whole blocks; extents are clipped back
 *   to the range the caller asked about.
 *
 * Ordering (the range lock below): an RMW rewrites bytes of its block that
 * its caller did not ask to write, with what it read. So from before its
 * READ until its WRITE is answered, nothing else may change that block:
 * an RMW holds its block exclusively, and every other command that
 * changes data (aligned WRITE, WRITE_ZEROES, TRIM) holds its range shared.
 * Shared holders do not exclude each other (two overlapping writes in
 * flight may land in either order, as on any disk). Requests wait in
 * arrival order for earlier conflicting ones; a waiting request is queued,
 * never a blocked thread: it is started by the completion that releases
 * the range. Reads take no lock: an RMW writes back unchanged the bytes it
 * did not mean to change, so a read overlapping it sees either the old or
 * the new data of that write, as with any write in flight.
 * With a minimum block size of 1 there are no RMWs, no lock, and all of
 * this reduces to splitting.
 */
#include <errno.h>
#include <string.h>
#include "nbdclient/names.h"
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

/* Range check shared by every call: inside the addressable export, no
 * wraparound. */
static gboolean
range_ok (NbdPool *pool, size_t count, uint64_t offset)
{
  return offset <= pool->size && count <= pool->size - offset;
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
  if (pool->extended && !(flags & NBD_CMD_FLAG_NO_HOLE)
      && !g_atomic_int_get (&pool->big_effect_refused))
    return INT64_MAX - INT64_MAX % bs;
  return MAX_EFFECT - MAX_EFFECT % bs;
}

/* The server may refuse a large effect length: it "MAY reply with an
 * NBD_EOVERFLOW or NBD_EINVAL error if the oversize request would require
 * too many server resources" ("Size constraints"). A command over
 * MAX_EFFECT refused that way is sent again in MAX_EFFECT pieces (zero
 * and trim are idempotent: locked_cmd_done; block status has reported
 * nothing yet: status_done), and the pool sends no more big ones. */

static gboolean
big_refused (NbdPool *pool, const NbdcCmd *cmd, int err)
{
  if ((err != EOVERFLOW && err != EINVAL) || cmd->count <= MAX_EFFECT)
    return FALSE;
  if (!g_atomic_int_get (&pool->big_effect_refused))
    g_debug ("the server refused %s of %" G_GUINT64_FORMAT " bytes (%s): "
             "using pieces of %u bytes from now on",
             nbdc_cmd_name (cmd->type), cmd->count, g_strerror (err),
             MAX_EFFECT);
  g_atomic_int_set (&pool->big_effect_refused, TRUE);
  return TRUE;
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

/* Splits [offset, offset+count) into commands of at most max bytes (for
 * commands that change no data: no range lock). */
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

/* ---- the range lock ---- */

/* One holder of, or waiter for, [start, end). Lives in pool->ranges
 * (guarded by pool->lock, as are all fields here) from range_acquire to
 * range_release, in arrival order. */
typedef struct RangeLock RangeLock;
struct RangeLock {
  uint64_t start, end;
  gboolean exclusive;         /* an RMW; else a shared data change */
  gboolean granted;
  void (*go) (RangeLock *l);  /* starts the request: called once, without
                                 pool->lock, when granted */
};

static gboolean
range_conflict (const RangeLock *a, const RangeLock *b)
{
  return a->start < b->end && b->start < a->end
    && (a->exclusive || b->exclusive);
}

/* Is l blocked by an entry that arrived before it? */
static gboolean
range_blocked (NbdPool *pool, GList *until, const RangeLock *l)
{
  for (GList *i = pool->ranges.head; i != until; i = i->next)
    if (range_conflict (i->data, l))
      return TRUE;
  return FALSE;
}

/* Starts l now if nothing earlier conflicts, else queues it: it starts
 * from the range_release that unblocks it (on a reader thread). */
static void
range_acquire (NbdPool *pool, RangeLock *l)
{
  if (min_block (pool) == 1) {          /* no RMW can exist */
    l->go (l);
    return;
  }
  g_mutex_lock (&pool->lock);
  /* A local copy: once unlocked, a release on another thread may grant
   * (and start) a waiting l, setting l->granted under our feet. */
  gboolean now = !range_blocked (pool, NULL, l);
  l->granted = now;
  g_queue_push_tail (&pool->ranges, l);
  g_mutex_unlock (&pool->lock);
  if (now)
    l->go (l);
}

/* Drops l (its owner may free it afterwards) and starts every waiter that
 * no earlier entry blocks any more, in arrival order. */
static void
range_release (NbdPool *pool, RangeLock *l)
{
  if (min_block (pool) == 1)
    return;
  GSList *start = NULL;
  g_mutex_lock (&pool->lock);
  g_queue_remove (&pool->ranges, l);
  for (GList *i = pool->ranges.head; i; i = i->next) {
    RangeLock *w = i->data;
    /* Only a waiter that overlapped l can have been waiting for it. */
    if (w->granted || w->end <= l->start || l->end <= w->start)
      continue;
    if (!range_blocked (pool, i, w)) {
      w->granted = TRUE;
      start = g_slist_prepend (start, w);
    }
  }
  g_mutex_unlock (&pool->lock);
  start = g_slist_reverse (start);
  for (GSList *i = start; i; i = i->next)
    ((RangeLock *) i->data)->go (i->data);
  g_slist_free (start);
}

/* A data-changing command (aligned WRITE, WRITE_ZEROES, TRIM) under a
 * shared range lock. */
typedef struct {
  RangeLock lock;             /* first: the go callback casts back */
  NbdcParent *parent;
  NbdcCmd cmd;
} LockedCmd;

static void send_locked (NbdcParent *p, uint16_t type, uint16_t flags,
                         uint64_t offset, uint64_t count, const char *buf);

static void
locked_cmd_done (void *opaque, int err)
{
  LockedCmd *c = opaque;
  NbdcParent *p = c->parent;
  if (c->cmd.type != NBD_CMD_WRITE && big_refused (p->pool, &c->cmd, err)) {
    /* Redo a refused big zero/trim in pieces, each under its own shared
     * lock (queued behind whatever came meanwhile; acquiring never
     * blocks). They join the parent before this part leaves it. */
    uint32_t bs = min_block (p->pool);
    uint64_t max = MAX_EFFECT - MAX_EFFECT % bs;
    uint64_t pos = c->cmd.offset, end = c->cmd.offset + c->cmd.count;
    while (pos < end) {
      uint64_t n = MIN (end - pos, max);
      send_locked (p, c->cmd.type, c->cmd.flags, pos, n, NULL);
      pos += n;
    }
    err = 0;
  }
  range_release (p->pool, &c->lock);
  g_free (c);
  pool_parent_part_done (p, err);
}

static void
locked_cmd_go (RangeLock *l)
{
  LockedCmd *c = (LockedCmd *) l;
  pool_send_cmd (c->parent->pool, &c->cmd);
}

static void
send_locked_cmd (NbdcParent *p, const NbdcCmd *cmd)
{
  LockedCmd *c = g_new0 (LockedCmd, 1);
  c->lock.start = cmd->offset;
  c->lock.end = cmd->offset + cmd->count;
  c->lock.go = locked_cmd_go;
  c->parent = p;
  c->cmd = *cmd;
  c->cmd.done = locked_cmd_done;
  c->cmd.opaque = c;
  pool_parent_add (p);
  range_acquire (p->pool, &c->lock);
}

static void
send_locked (NbdcParent *p, uint16_t type, uint16_t flags, uint64_t offset,
             uint64_t count, const char *buf)
{
  NbdcCmd cmd = {
    .type = type, .flags = flags, .offset = offset, .count = count,
    .buf = (char *) buf,
  };
  send_locked_cmd (p, &cmd);
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

/* Reads the one block at blk (a multiple of bs) and copies
 * [want, want+len) out of it. */
static void
bounce_read (NbdcParent *p, uint64_t blk, uint32_t bs, char *dst,
             uint64_t want, size_t len)
{
  BounceRead *b = g_new (BounceRead, 1);
  b->parent = p;
  b->bounce = g_malloc (bs);
  b->dst = dst;
  b->skip = want - blk;
  b->len = len;
  pool_parent_add (p);
  NbdcCmd cmd = {
    .type = NBD_CMD_READ, .offset = blk, .count = bs,
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
  char *dst = buf;
  NbdcParent *p = pool_parent_new (pool, done, opaque);
  /* Block by block at the edges, max-payload pieces in between. Every
   * block read ends at or before pool->size (a multiple of bs). */
  for (uint64_t pos = offset; pos < end;) {
    uint64_t blk = round_down (pos, bs);
    if (pos != blk || end - pos < bs) {
      uint64_t e = MIN (end, blk + bs);
      bounce_read (p, blk, bs, dst + (pos - offset), pos, e - pos);
      pos = e;
    }
    else {
      uint64_t n = MIN (round_down (end, bs) - pos,
                        (uint64_t) pool->max_payload);
      send_part (p, NBD_CMD_READ, 0, pos, n, dst + (pos - offset));
      pos += n;
    }
  }
  pool_parent_release (p);
}

/* ---- writes ---- */

/* One read-modify-write of the block at blk, holding it exclusively. */
typedef struct {
  RangeLock lock;             /* first: the go callback casts back */
  NbdcParent *parent;
  NbdPool *pool;
  uint16_t flags;
  char *bounce;
  const char *src;            /* bytes to put at bounce + skip */
  size_t skip;
  size_t len;
} Rmw;

static void
rmw_end (Rmw *r, int err)
{
  NbdcParent *p = r->parent;
  range_release (r->pool, &r->lock);
  g_free (r->bounce);
  g_free (r);
  pool_parent_part_done (p, err);
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
    .type = NBD_CMD_WRITE, .flags = r->flags, .offset = r->lock.start,
    .count = r->lock.end - r->lock.start, .buf = r->bounce,
    .done = rmw_written, .opaque = r,
  };
  pool_send_cmd (r->pool, &cmd);
}

static void
rmw_go (RangeLock *l)
{
  Rmw *r = (Rmw *) l;
  NbdcCmd cmd = {
    .type = NBD_CMD_READ, .offset = r->lock.start,
    .count = r->lock.end - r->lock.start,
    .buf = r->bounce, .done = rmw_read, .opaque = r,
  };
  pool_send_cmd (r->pool, &cmd);
}

static void
rmw_submit (NbdcParent *p, uint64_t blk, uint32_t bs, uint16_t flags,
            const char *src, size_t skip, size_t len)
{
  Rmw *r = g_new0 (Rmw, 1);
  r->lock.start = blk;
  r->lock.end = blk + bs;
  r->lock.exclusive = TRUE;
  r->lock.go = rmw_go;
  r->parent = p;
  r->pool = p->pool;
  r->flags = flags;
  r->bounce = g_malloc (bs);
  r->src = src;
  r->skip = skip;
  r->len = len;
  pool_parent_add (p);
  range_acquire (p->pool, &r->lock);
}

/* Changes [offset, offset+count): whole blocks with `type` (WRITE from
 * src, or WRITE_ZEROES with src NULL) in pieces of at most max, partial
 * blocks by RMW from src (or zero_block for WRITE_ZEROES). advance: src
 * holds count bytes; else it is a zero buffer reused for every piece. */
static void
write_range (NbdcParent *p, uint16_t type, uint16_t flags, const char *src,
             gboolean advance, uint64_t count, uint64_t offset, uint64_t max)
{
  uint32_t bs = min_block (p->pool);
  uint64_t end = offset + count;
  for (uint64_t pos = offset; pos < end;) {
    uint64_t blk = round_down (pos, bs);
    const char *s = src == NULL ? NULL : advance ? src + (pos - offset) : src;
    if (pos != blk || end - pos < bs) {
      uint64_t e = MIN (end, blk + bs);
      rmw_submit (p, blk, bs, flags & NBD_CMD_FLAG_FUA,
                  s ? s : (const char *) zero_block, pos - blk, e - pos);
      pos = e;
    }
    else {
      uint64_t n = MIN (round_down (end, bs) - pos, max);
      send_locked (p, type, flags, pos, n, s);
      pos += n;
    }
  }
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
  write_range (p, NBD_CMD_WRITE, f, buf, TRUE, count, offset,
               pool->max_payload);
  pool_parent_release (p);
}

gboolean
nbdc_pool_pwrite_pipe_ok (NbdPool *pool, size_t count, uint64_t offset)
{
  /* One WRITE, as it stands, on a plain connection whose scratch pipe
   * takes it (conn-splice.c); anything else (TLS, edges to
   * read-modify-write, pieces) needs the bytes in memory. The first
   * connection speaks for all: same process, same pipe size limit. */
  uint32_t bs = min_block (pool);
  return !pool->exp.tls && count > 0 && count <= pool->max_payload
    && offset % bs == 0 && count % bs == 0
    && count <= nbdc_conn_pipe_max (CONN (pool, 0));
}

void
nbdc_pool_pwrite_pipe (NbdPool *pool, int pipe_fd, size_t count,
                       uint64_t offset, uint32_t flags,
                       NbdcDoneFn done, void *opaque)
{
  if (!nbdc_pool_pwrite_pipe_ok (pool, count, offset)) {
    done (opaque, EINVAL);    /* the caller did not ask first */
    return;
  }
  if (!write_ok (pool, count, offset, done, opaque))
    return;
  NbdcParent *p = pool_parent_new (pool, done, opaque);
  NbdcCmd cmd = {
    .type = NBD_CMD_WRITE, .flags = fua_flags (pool, p, flags),
    .offset = offset, .count = count,
    .in_pipe = TRUE, .payload_pipe = pipe_fd,
  };
  send_locked_cmd (p, &cmd);
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
  uint32_t bs = min_block (pool);
  NbdcParent *p = pool_parent_new (pool, done, opaque);
  uint16_t f = fua_flags (pool, p, flags);
  if (eflags & NBD_FLAG_SEND_WRITE_ZEROES) {
    f |= flags & (NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO);
    write_range (p, NBD_CMD_WRITE_ZEROES, f, NULL, FALSE, count, offset,
                 effect_cap (pool, f, bs));
  }
  else {
    /* No WRITE_ZEROES: one zero buffer, written again for every piece. */
    char *zeroes = g_malloc0 (MIN (count, (size_t) pool->max_payload));
    p->owned = zeroes;
    write_range (p, NBD_CMD_WRITE, f, zeroes, FALSE, count, offset,
                 pool->max_payload);
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
  /* Whole blocks only: no RMW, just the shared lock against one. */
  write_range (p, NBD_CMD_TRIM, f, NULL, FALSE, b - a, a,
               effect_cap (pool, 0, bs));
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
  NbdcCmd cmd;                /* as sent (for status_done's retry) */
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

/* A refused big block status query is asked again for MAX_EFFECT bytes
 * (callers loop from the last extent anyway). Its opaque is the parent,
 * like extent_clipped's: the connection passes cmd.opaque to both. */
static void
status_done (void *opaque, int err)
{
  NbdcParent *p = opaque;
  ExtentClip *c = p->owned;
  if (big_refused (p->pool, &c->cmd, err)) {
    uint32_t bs = min_block (p->pool);
    c->cmd.count = MAX_EFFECT - MAX_EFFECT % bs;
    NbdcCmd cmd = c->cmd;
    pool_send_cmd (p->pool, &cmd);
    return;
  }
  pool_parent_part_done (p, err);
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
  c->cmd = (NbdcCmd) {
    .type = NBD_CMD_BLOCK_STATUS, .flags = flags & NBD_CMD_FLAG_REQ_ONE,
    .offset = a, .count = b - a, .extent = extent_clipped,
    .done = status_done, .opaque = p,
  };
  p->owned = c;
  pool_parent_add (p);
  NbdcCmd cmd = c->cmd;
  pool_send_cmd (pool, &cmd);
  pool_parent_release (p);
}
