/* nbdfs — reading and checking one reply (nbd-proto.md "Simple reply
 * message", "Structured reply chunk message", "Structured reply types";
 * extended headers: "Extended reply chunk message"): each chunk is
 * validated against the request it answers, the same checks whichever
 * header carried it. Runs on the connection's reader thread (conn.c).
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <string.h>
#include "nbdclient/conn-internal.h"
#include "nbdclient/names.h"
#include "nbdclient/protocol.h"

/* Our own caps on what a server may make us read (nbd-proto.md: "A server
 * MUST NOT send a chunk where any variable-length portion ... is larger
 * than any advertised maximum payload"; "Servers SHOULD NOT send more than
 * 2^20 extents in a single reply chunk"). */
#define MAX_STATUS_CHUNK  (4 + 8u * (1u << 20))

#define MAX_STATUS_EXT_CHUNK (8 + 16u * (1u << 20))

#define MAX_ERROR_CHUNK   (14 + NBD_MAX_ERROR_MESSAGE + 64)

#define MAX_UNKNOWN_ERROR (64 * 1024)

/* Non-read replies get this many chunks before we call the reply endless. */
#define MAX_OTHER_CHUNKS  1024

typedef struct {
  uint64_t start, end;
} Range;

gboolean
conn_handle_simple (NbdConn *c, Death *d, const uint8_t *hdr)
{
  struct nbd_simple_reply r;
  memcpy (&r, hdr, sizeof r);
  uint32_t error = GUINT32_FROM_BE (r.error);
  uint64_t cookie = GUINT64_FROM_BE (r.cookie);

  NbdcReq *req = conn_lookup (c, cookie);
  if (!req)
    return violation (d, "simple reply with unknown cookie 0x%"
                      G_GINT64_MODIFIER "x", cookie);
  if (req->chunks > 0)
    return violation (d, "simple reply in the middle of a structured reply "
                      "(cookie 0x%" G_GINT64_MODIFIER "x)", cookie);
  if (req->cmd.type == NBD_CMD_READ) {
    /* "MUST NOT use a simple reply for NBD_CMD_READ" once negotiated. */
    if (c->structured)
      return violation (d, "simple reply to a read although structured "
                        "replies were negotiated");
    if (error == 0)
      RECV (c, d, req->cmd.buf, req->cmd.count, FALSE, "reading read data");
  }
  /* "For a successful return, the server MUST use a structured reply,
   * containing exactly one chunk of type NBD_REPLY_TYPE_BLOCK_STATUS"
   * (NBD_CMD_BLOCK_STATUS): a simple "success" carries no extents. */
  if (req->cmd.type == NBD_CMD_BLOCK_STATUS && error == 0)
    return violation (d, "simple reply to block status (it must be a "
                      "structured reply with the extents)");
  int err = error ? nbdc_errno_from_nbd (error) : 0;
  if (error && c->debug)
    g_debug ("%s: %s failed: server sent error %" G_GUINT32_FORMAT " (%s)",
             c->name, nbdc_cmd_name (req->cmd.type), error,
             nbdc_err_name (error));
  return conn_complete (c, d, req, err);
}

/* Marks [start, start+len) of a read as covered; FALSE if it overlaps an
 * earlier content chunk ("MUST NOT overlap with the bounds of any earlier
 * content chunk"). */
static gboolean
req_cover (NbdcReq *req, uint64_t start, uint64_t len)
{
  if (!req->covered)
    req->covered = g_array_new (FALSE, FALSE, sizeof (Range));
  GArray *a = req->covered;
  Range n = { start, start + len };
  /* First range starting after n.start. */
  guint lo = 0, hi = a->len;
  while (lo < hi) {
    guint mid = (lo + hi) / 2;
    if (g_array_index (a, Range, mid).start <= start)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo > 0 && g_array_index (a, Range, lo - 1).end > n.start)
    return FALSE;
  if (lo < a->len && g_array_index (a, Range, lo).start < n.end)
    return FALSE;
  gboolean merge_prev = lo > 0 && g_array_index (a, Range, lo - 1).end == n.start;
  gboolean merge_next = lo < a->len && g_array_index (a, Range, lo).start == n.end;
  if (merge_prev && merge_next) {
    g_array_index (a, Range, lo - 1).end = g_array_index (a, Range, lo).end;
    g_array_remove_index (a, lo);
  }
  else if (merge_prev)
    g_array_index (a, Range, lo - 1).end = n.end;
  else if (merge_next)
    g_array_index (a, Range, lo).start = n.start;
  else
    g_array_insert_val (a, lo, n);
  req->covered_bytes += len;
  return TRUE;
}

/* Checks a content chunk's range against the request. */
static gboolean
check_content (NbdcReq *req, Death *d, const char *kind, uint64_t off,
               uint64_t len)
{
  uint64_t start = req->cmd.offset, count = req->cmd.count;
  if (off < start || off - start > count || len > count - (off - start))
    return violation (d, "%s chunk [%" G_GUINT64_FORMAT ", +%"
                      G_GUINT64_FORMAT ") outside the requested range [%"
                      G_GUINT64_FORMAT ", +%" G_GUINT64_FORMAT ")",
                      kind, off, len, start, count);
  if (!req_cover (req, off, len))
    return violation (d, "%s chunk [%" G_GUINT64_FORMAT ", +%"
                      G_GUINT64_FORMAT ") overlaps an earlier chunk",
                      kind, off, len);
  return TRUE;
}

static gboolean
conn_chunk_data (NbdConn *c, Death *d, NbdcReq *req, uint32_t length)
{
  if (req->cmd.type != NBD_CMD_READ)
    return violation (d, "offset data chunk in reply to %s",
                      nbdc_cmd_name (req->cmd.type));
  if (length < 9)
    return violation (d, "offset data chunk of length %" G_GUINT32_FORMAT
                      " (must be at least 9)", length);
  uint64_t off;
  RECV (c, d, &off, 8, FALSE, "reading offset data chunk");
  off = GUINT64_FROM_BE (off);
  uint64_t len = length - 8;
  if (!check_content (req, d, "offset data", off, len))
    return FALSE;
  RECV (c, d, (char *) req->cmd.buf + (off - req->cmd.offset), len, FALSE,
        "reading read data");
  return TRUE;
}

static gboolean
conn_chunk_hole (NbdConn *c, Death *d, NbdcReq *req, uint32_t length)
{
  if (req->cmd.type != NBD_CMD_READ)
    return violation (d, "offset hole chunk in reply to %s",
                      nbdc_cmd_name (req->cmd.type));
  if (length != 12)
    return violation (d, "offset hole chunk of length %" G_GUINT32_FORMAT
                      " (must be 12)", length);
  struct nbd_structured_reply_offset_hole h;
  RECV (c, d, &h, sizeof h, FALSE, "reading offset hole chunk");
  uint64_t off = GUINT64_FROM_BE (h.offset);
  uint32_t len = GUINT32_FROM_BE (h.length);
  if (len == 0)
    return violation (d, "offset hole chunk of size 0");
  if (!check_content (req, d, "offset hole", off, len))
    return FALSE;
  memset ((char *) req->cmd.buf + (off - req->cmd.offset), 0, len);
  return TRUE;
}

/* What both block status chunk forms must satisfy once their context id
 * and extent count are read. */
static gboolean
status_begin (NbdConn *c, Death *d, NbdcReq *req, uint32_t id, uint32_t n)
{
  if (!c->base_allocation || id != c->base_allocation_id)
    return violation (d, "block status for metadata context %"
                      G_GUINT32_FORMAT ", which we did not negotiate", id);
  if (req->got_status)
    return violation (d, "second block status chunk for one context");
  req->got_status = TRUE;
  if ((req->cmd.flags & NBD_CMD_FLAG_REQ_ONE) && n != 1)
    return violation (d, "%" G_GUINT32_FORMAT " extents although we asked "
                      "for one (NBD_CMD_FLAG_REQ_ONE)", n);
  return TRUE;
}

/* One extent of either form (32-bit lengths and flags widened): checked,
 * then reported clipped to the request; *pos is where it starts and
 * moves past it. */
static gboolean
status_extent (Death *d, NbdcReq *req, uint64_t *pos, uint64_t len,
               uint64_t flags)
{
  uint64_t end = req->cmd.offset + req->cmd.count;
  if (len == 0)
    return violation (d, "block status extent of length 0");
  /* base:allocation: "the most-significant 32 bits of status MUST be all
   * zeroes" (never set in a 32-bit descriptor). */
  if (flags >> 32)
    return violation (d, "base:allocation status 0x%" G_GINT64_MODIFIER
                      "x has high bits set", flags);
  /* "the sum of the length fields of the first N-1 extents (if any) MUST
   * be less than the requested length" */
  if (*pos >= end)
    return violation (d, "block status extents go past the requested "
                      "length %" G_GUINT64_FORMAT, req->cmd.count);
  uint64_t clipped = MIN (len, end - *pos);
  if (req->cmd.extent)
    req->cmd.extent (req->cmd.opaque, *pos, clipped, (uint32_t) flags);
  *pos += clipped;
  return TRUE;
}

static gboolean
conn_chunk_status (NbdConn *c, Death *d, NbdcReq *req, uint32_t length)
{
  if (req->cmd.type != NBD_CMD_BLOCK_STATUS)
    return violation (d, "block status chunk in reply to %s",
                      nbdc_cmd_name (req->cmd.type));
  if (c->extended)
    /* "only NBD_REPLY_TYPE_BLOCK_STATUS_EXT for extended headers" */
    return violation (d, "32-bit block status chunk although extended "
                      "headers were negotiated");
  if (length < 12 || (length - 4) % 8 != 0 || length > MAX_STATUS_CHUNK)
    return violation (d, "block status chunk of length %" G_GUINT32_FORMAT,
                      length);
  uint32_t id;
  RECV (c, d, &id, 4, FALSE, "reading block status chunk");
  uint32_t n = (length - 4) / 8;
  if (!status_begin (c, d, req, GUINT32_FROM_BE (id), n))
    return FALSE;
  uint64_t pos = req->cmd.offset;
  struct nbd_block_descriptor batch[256];
  while (n > 0) {
    uint32_t k = MIN (n, G_N_ELEMENTS (batch));
    RECV (c, d, batch, k * sizeof batch[0], FALSE, "reading extents");
    for (uint32_t i = 0; i < k; i++)
      if (!status_extent (d, req, &pos, GUINT32_FROM_BE (batch[i].length),
                          GUINT32_FROM_BE (batch[i].status_flags)))
        return FALSE;
    n -= k;
  }
  return TRUE;
}

/* NBD_REPLY_TYPE_BLOCK_STATUS_EXT: "length MUST be 8 + (a positive
 * multiple of 16)", descriptor count "MUST correspond", 64-bit extent
 * lengths and status. Otherwise the rules of the 32-bit chunk. */
static gboolean
conn_chunk_status_ext (NbdConn *c, Death *d, NbdcReq *req, uint32_t length)
{
  if (req->cmd.type != NBD_CMD_BLOCK_STATUS)
    return violation (d, "extended block status chunk in reply to %s",
                      nbdc_cmd_name (req->cmd.type));
  if (!c->extended)
    return violation (d, "extended block status chunk although extended "
                      "headers were not negotiated");
  if (length < 24 || (length - 8) % 16 != 0 || length > MAX_STATUS_EXT_CHUNK)
    return violation (d, "extended block status chunk of length %"
                      G_GUINT32_FORMAT, length);
  struct nbd_structured_reply_block_status_ext_hdr bh;
  RECV (c, d, &bh, sizeof bh, FALSE, "reading extended block status chunk");
  uint32_t n = GUINT32_FROM_BE (bh.count);
  if (n != (length - 8) / 16)
    return violation (d, "extended block status chunk of length %"
                      G_GUINT32_FORMAT " says it holds %" G_GUINT32_FORMAT
                      " extents", length, n);
  if (!status_begin (c, d, req, GUINT32_FROM_BE (bh.context_id), n))
    return FALSE;
  uint64_t pos = req->cmd.offset;
  struct nbd_block_descriptor_ext batch[128];
  while (n > 0) {
    uint32_t k = MIN (n, G_N_ELEMENTS (batch));
    RECV (c, d, batch, k * sizeof batch[0], FALSE, "reading extents");
    for (uint32_t i = 0; i < k; i++)
      if (!status_extent (d, req, &pos, GUINT64_FROM_BE (batch[i].length),
                          GUINT64_FROM_BE (batch[i].status_flags)))
        return FALSE;
    n -= k;
  }
  return TRUE;
}

/* NBD_REPLY_TYPE_ERROR, _ERROR_OFFSET and unknown error types. */
static gboolean
conn_chunk_error (NbdConn *c, Death *d, NbdcReq *req, uint16_t type,
                  uint32_t length)
{
  gboolean known = type == NBD_REPLY_TYPE_ERROR
    || type == NBD_REPLY_TYPE_ERROR_OFFSET;
  uint32_t fixed = type == NBD_REPLY_TYPE_ERROR_OFFSET ? 14 : 6;
  if (length < fixed)
    return violation (d, "%s chunk of length %" G_GUINT32_FORMAT
                      " (must be at least %" G_GUINT32_FORMAT ")",
                      nbdc_reply_type_name (type), length, fixed);
  if (length > (known ? MAX_ERROR_CHUNK : MAX_UNKNOWN_ERROR))
    return violation (d, "%s chunk of length %" G_GUINT32_FORMAT
                      " is too long", nbdc_reply_type_name (type), length);
  struct nbd_structured_reply_error e;
  RECV (c, d, &e, sizeof e, FALSE, "reading error chunk");
  uint32_t error = GUINT32_FROM_BE (e.error);
  uint16_t msglen = GUINT16_FROM_BE (e.len);
  if (msglen > length - fixed)
    return violation (d, "error message length %u does not fit in a "
                      "chunk of length %" G_GUINT32_FORMAT, msglen, length);
  if (msglen > NBD_MAX_ERROR_MESSAGE)
    return violation (d, "error message length %u exceeds %u",
                      msglen, NBD_MAX_ERROR_MESSAGE);
  char msg[NBD_MAX_ERROR_MESSAGE];
  RECV (c, d, msg, msglen, FALSE, "reading error message");
  uint32_t rest = length - 6 - msglen;
  if (type == NBD_REPLY_TYPE_ERROR_OFFSET) {
    if (rest != 8)
      return violation (d, "error offset chunk with %" G_GUINT32_FORMAT
                        " trailing bytes (must be 8)", rest);
    uint64_t off;
    RECV (c, d, &off, 8, FALSE, "reading error offset");
    off = GUINT64_FROM_BE (off);
    if (off < req->cmd.offset || off - req->cmd.offset >= req->cmd.count)
      return violation (d, "error offset %" G_GUINT64_FORMAT " outside the "
                        "requested range [%" G_GUINT64_FORMAT ", +%"
                        G_GUINT64_FORMAT ")", off, req->cmd.offset,
                        req->cmd.count);
  }
  else if (!conn_skip (c, d, rest, "reading error chunk"))
    return FALSE;
  if (error == 0)
    return violation (d, "%s chunk with error 0",
                      nbdc_reply_type_name (type));

  int err = known ? nbdc_errno_from_nbd (error) : EIO;
  if (!req->err)
    req->err = err;
  if (c->debug || !known) {
    g_autofree char *text = nbdc_escape_text (msg, msglen, 200);
    if (known)
      g_debug ("%s: %s failed: server sent error %" G_GUINT32_FORMAT
               " (%s)%s%s", c->name, nbdc_cmd_name (req->cmd.type), error,
               nbdc_err_name (error), msglen ? ": " : "", text);
    else
      g_warning ("%s: unknown error chunk type %u in reply to %s%s%s",
                 c->name, type, nbdc_cmd_name (req->cmd.type),
                 msglen ? ": " : "", text);
  }
  return TRUE;
}

/* One chunk of a structured or extended reply, its header decoded (and,
 * for an extended one, its offset and length already checked); req is
 * the request its cookie names. */
static gboolean
conn_handle_chunk (NbdConn *c, Death *d, NbdcReq *req, uint16_t flags,
                   uint16_t type, uint64_t cookie, uint32_t length)
{
  /* A read's content chunks cannot outnumber its bytes; anything else has
   * few chunks. More than that is a reply that never ends. */
  uint64_t limit = req->cmd.type == NBD_CMD_READ
    ? (uint64_t) req->cmd.count + 16 : MAX_OTHER_CHUNKS;
  if (++req->chunks > limit)
    return violation (d, "reply to %s never ends (more than %"
                      G_GUINT64_FORMAT " chunks)",
                      nbdc_cmd_name (req->cmd.type), limit);

  if (c->debug)
    g_debug ("%s: cookie 0x%" G_GINT64_MODIFIER "x: chunk %u (%s)%s, "
             "length %" G_GUINT32_FORMAT, c->name, cookie, type,
             nbdc_reply_type_name (type),
             flags & NBD_REPLY_FLAG_DONE ? " done" : "", length);
  gboolean ok;
  switch (type) {
  case NBD_REPLY_TYPE_NONE:
    if (length != 0)
      return violation (d, "none chunk of length %" G_GUINT32_FORMAT, length);
    if (!(flags & NBD_REPLY_FLAG_DONE))
      return violation (d, "none chunk without the done flag");
    ok = TRUE;
    break;
  case NBD_REPLY_TYPE_OFFSET_DATA:
    ok = conn_chunk_data (c, d, req, length);
    break;
  case NBD_REPLY_TYPE_OFFSET_HOLE:
    ok = conn_chunk_hole (c, d, req, length);
    break;
  case NBD_REPLY_TYPE_BLOCK_STATUS:
    ok = conn_chunk_status (c, d, req, length);
    break;
  case NBD_REPLY_TYPE_BLOCK_STATUS_EXT:
    ok = conn_chunk_status_ext (c, d, req, length);
    break;
  default:
    if (NBD_REPLY_TYPE_IS_ERR (type)) {
      ok = conn_chunk_error (c, d, req, type, length);
      break;
    }
    return violation (d, "unexpected chunk type %u (%s) in reply to %s",
                      type, nbdc_reply_type_name (type),
                      nbdc_cmd_name (req->cmd.type));
  }
  if (!ok)
    return FALSE;
  if (!(flags & NBD_REPLY_FLAG_DONE))
    return TRUE;

  int err = req->err;
  if (!err && req->cmd.type == NBD_CMD_READ
      && req->covered_bytes != req->cmd.count)
    return violation (d, "read reply ended with %" G_GUINT64_FORMAT " of %"
                      G_GUINT64_FORMAT " bytes covered",
                      req->covered_bytes, req->cmd.count);
  if (!err && req->cmd.type == NBD_CMD_BLOCK_STATUS && !req->got_status)
    return violation (d, "block status reply without a status chunk");
  return conn_complete (c, d, req, err);
}

gboolean
conn_handle_structured (NbdConn *c, Death *d, const uint8_t *hdr)
{
  struct nbd_structured_reply r;
  memcpy (&r, hdr, sizeof r);
  uint16_t flags = GUINT16_FROM_BE (r.flags);
  uint16_t type = GUINT16_FROM_BE (r.type);
  uint64_t cookie = GUINT64_FROM_BE (r.cookie);
  uint32_t length = GUINT32_FROM_BE (r.length);

  if (!c->structured)
    return violation (d, "structured reply although structured replies "
                      "were not negotiated");
  if (c->extended)
    /* "all server replies MUST use an extended reply" */
    return violation (d, "structured reply although extended headers "
                      "were negotiated");
  NbdcReq *req = conn_lookup (c, cookie);
  if (!req)
    return violation (d, "%s chunk with unknown cookie 0x%"
                      G_GINT64_MODIFIER "x", nbdc_reply_type_name (type),
                      cookie);
  return conn_handle_chunk (c, d, req, flags, type, cookie, length);
}

/* "Extended reply chunk message": the structured reply's fields plus the
 * request's offset, with a 64-bit length that "in practice will never
 * exceed a 32-bit value" (a client "MAY initiate hard disconnect if a
 * server's reply length is unexpectedly large": we do). The payloads are
 * the structured ones, checked by the same code. */
gboolean
conn_handle_extended (NbdConn *c, Death *d, const uint8_t *hdr)
{
  struct nbd_extended_reply r;
  memcpy (&r, hdr, sizeof r);
  uint16_t flags = GUINT16_FROM_BE (r.flags);
  uint16_t type = GUINT16_FROM_BE (r.type);
  uint64_t cookie = GUINT64_FROM_BE (r.cookie);
  uint64_t offset = GUINT64_FROM_BE (r.offset);
  uint64_t length = GUINT64_FROM_BE (r.length);

  if (!c->extended)
    return violation (d, "extended reply although extended headers were "
                      "not negotiated");
  NbdcReq *req = conn_lookup (c, cookie);
  if (!req)
    return violation (d, "%s chunk with unknown cookie 0x%"
                      G_GINT64_MODIFIER "x", nbdc_reply_type_name (type),
                      cookie);
  if (offset != req->cmd.offset)
    return violation (d, "%s chunk in reply to %s at offset %"
                      G_GUINT64_FORMAT " names offset %" G_GUINT64_FORMAT
                      " (it MUST match the request)",
                      nbdc_reply_type_name (type),
                      nbdc_cmd_name (req->cmd.type), req->cmd.offset, offset);
  if (length > UINT32_MAX)
    return violation (d, "%s chunk of length %" G_GUINT64_FORMAT
                      " (more than 32 bits)", nbdc_reply_type_name (type),
                      length);
  return conn_handle_chunk (c, d, req, flags, type, cookie, (uint32_t) length);
}
