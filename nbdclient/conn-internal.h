/* nbdfs — what conn.c (the connection: in-flight table, sender,
 * reader) and conn-reply.c (parsing and checking replies) share (not a
 * public API).
 */
#ifndef NBDCLIENT_CONN_INTERNAL_H
#define NBDCLIENT_CONN_INTERNAL_H

#include "nbdclient/conn.h"

/* One request. cmd and slot are set (under NbdConn.lock) before the
 * request is in the table, then only read; what its replies say is the
 * reader's alone (the reader is the only thread that parses them); the
 * hand-over between sender and reader is under NbdConn.lock. */
typedef struct {
  NbdcCmd cmd;
  uint32_t slot;
  int err;                    /* reader: first error chunk's errno */
  GArray *covered;            /* reader: READ: sorted, merged Ranges */
  uint64_t covered_bytes;     /* reader */
  unsigned chunks;            /* reader */
  gboolean got_status;        /* reader */
  gboolean sending;           /* lock: the sender is still writing it */
  gboolean finished;          /* lock: replied to or died while sending:
                                 the sender completes it */
  gint64 sent_at;             /* lock: monotonic us when it took its slot */
  GList age_link;             /* lock: in NbdConn.aged while in the table */
  int final_err;              /* lock: with finished */
  gboolean final_salvage;     /* lock: with finished */
} NbdcReq;

typedef struct {               /* NbdConn.slots[]: all under NbdConn.lock */
  NbdcReq *req;               /* NULL = free */
  uint32_t gen;
} Slot;

/* The fields above `lock` are set by nbdc_conn_new and only read
 * afterwards; those below it are guarded by it unless their comment says
 * otherwise. */
struct NbdConn {
  NbdTransport *t;            /* receiving: the reader only; sending:
                                 under send_lock; shutdown: any thread */
  char *name;
  gboolean structured;
  gboolean extended;          /* 32-byte headers both ways */
  gboolean base_allocation;
  uint32_t base_allocation_id;
  unsigned depth;
  unsigned timeout;
  NbdcSalvageFn salvage;
  NbdcDeadFn dead_fn;
  void *opaque;
  gboolean debug;

  GMutex lock;
  GCond cond;                 /* sender: work or slot available, or stop */
  GCond idle;                 /* drain: nothing queued or in flight */
  GCond sent;                 /* awaited was sent (or the sender gave up) */
  NbdcReq *awaited;           /* replied to while still sending: the reader
                                 waits for the sender (conn_complete) */
  /* In-flight requests, oldest first (under lock): the head's age is
   * what --timeout bounds (not only silence on the connection: a server
   * that answers everything but one request must not keep that one
   * waiting forever). */
  GQueue aged;
  char *overdue;              /* reader only: the request that timed out */
  /* Threads blocked on cond / idle right now. glib's g_cond_signal is a
   * futex syscall even with nobody waiting; the reply path checks these
   * so a qd1 completion costs no wake-up nobody needs. */
  gboolean sender_waiting;
  unsigned idle_waiters;
  GQueue queue;               /* NbdcReq not yet in the table */
  Slot *slots;
  uint32_t *free_slots;
  unsigned n_free;
  unsigned in_flight;
  gint64 last_progress;       /* monotonic us */
  gboolean dead;              /* torn down by the reader */
  gboolean broken;            /* someone asked for teardown */
  char *broken_reason;
  gboolean stopping;          /* nbdc_conn_free in progress */
  gboolean send_disc;         /* sender: send NBD_CMD_DISC, then shut down */
  gboolean eshutdown;         /* the server replied NBD_ESHUTDOWN */

  GThread *reader;            /* set by nbdc_conn_new, joined by free */
  GThread *sender;            /* set by nbdc_conn_new, joined by free */
  uint8_t *rbuf;              /* reader only: bytes received, not parsed */
  size_t rpos, rlen;          /* unparsed bytes are rbuf[rpos, rlen) */
  GMutex send_lock;           /* held across one request's sendv; taken
                               * after lock is dropped, or try-locked */
  /* Pipe payloads pass through here on their way to the socket
   * (conn-splice.c): send_lock. -1 when there is none; scratch_max is
   * what it holds (set at creation, then read-only). */
  int scratch[2];
  size_t scratch_max;
};

/* conn-splice.c */
void conn_scratch_open (NbdConn *c);
void conn_scratch_close (NbdConn *c);
int conn_send_piped (NbdConn *c, const void *hdr, size_t hlen,
                     const NbdcCmd *cmd);

typedef enum {
  RECV_OK = 0,
  RECV_EOF,
  RECV_ERROR,
  RECV_TIMEOUT,
} RecvResult;

typedef struct {
  gboolean violation;         /* protocol violation (never salvaged) */
  gboolean clean;             /* EOF after we asked to stop */
  gboolean timeout;           /* request_timeout without a reply */
  char *why;
} Death;

#define RECV(c, d, buf, len, boundary, what)                             \
  do {                                                                   \
    int err_ = 0;                                                        \
    RecvResult r_ = conn_recv ((c), (buf), (len), (boundary), &err_);    \
    if (r_ != RECV_OK)                                                   \
      return lost ((c), (d), r_, err_, (what));                          \
  } while (0)

/* conn.c */
RecvResult conn_recv (NbdConn *c, void *buf, size_t len, gboolean boundary,
                      int *errp);
gboolean violation (Death *d, const char *fmt, ...) G_GNUC_PRINTF (2, 3);
gboolean lost (NbdConn *c, Death *d, RecvResult r, int err, const char *what);
gboolean conn_skip (NbdConn *c, Death *d, uint64_t len, const char *what);
NbdcReq *conn_lookup (NbdConn *c, uint64_t cookie);
gboolean conn_complete (NbdConn *c, Death *d, NbdcReq *req, int err);

/* conn-reply.c: one reply whose header (hdr) was read; FALSE: the
 * connection dies (d says why). */
gboolean conn_handle_simple (NbdConn *c, Death *d, const uint8_t *hdr);
gboolean conn_handle_structured (NbdConn *c, Death *d, const uint8_t *hdr);
gboolean conn_handle_extended (NbdConn *c, Death *d, const uint8_t *hdr);

#endif
