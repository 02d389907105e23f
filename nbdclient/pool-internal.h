/* nbdfs — what the pool's files share (not a public API).
 *
 * pool.c opens and closes the connections (pool-grow.c, on demand, the
 * extras); pool-send.c spreads commands
 * over them; pool-request.c joins the parts of one request;
 * pool-flush.c keeps the flush bookkeeping (what a flush covers, what a
 * lost connection put at risk); pool-sync.c has the synchronous
 * wrappers; pool-reconnect.c brings lost connections back. blocksize.c
 * turns any offset/length into commands the server accepts (nbd-proto.md
 * "Size constraints") and sends them with pool_send_cmd().
 */
#ifndef NBDCLIENT_POOL_INTERNAL_H
#define NBDCLIENT_POOL_INTERNAL_H

#include "nbdclient/conn.h"
#include "nbdclient/pool.h"

/* Which lock guards what: the fields above `lock` are set by
 * nbdc_pool_open before any other thread can see the pool and only read
 * afterwards, unless their comment says otherwise; the fields below it
 * are guarded by it, unless their comment says otherwise. */
struct NbdPool {
  NbdExport exp;              /* first connection's, as negotiated */
  uint64_t size;              /* what we address: exp.size rounded down to
                                 the minimum block (blocksize.c) */
  NbdcOptions opts;           /* for reconnects */
  NbdcPoolConfig cfg;
  gboolean read_only;
  gboolean base_allocation;   /* negotiated on every connection */
  gboolean extended;          /* extended headers on every connection:
                                 64-bit effect lengths (blocksize.c) */
  gint big_effect_refused;    /* atomic: the server refused an effect
                                 length over 1 GiB (blocksize.c) */
  uint32_t max_payload;       /* multiple of min_block, <= 32 MiB */
  unsigned cap;               /* slots in conns (and in every per-slot
                                 array): the most connections, -C N or
                                 4 under CAN_MULTI_CONN */
  gboolean on_demand;         /* cfg.on_demand with cap > 1: extras are
                                 opened and closed by the manager */
  gint64 idle_us;             /* on demand: an extra unused this long is
                                 closed */

  GMutex lock;
  GCond cond;                 /* with lock: outstanding fell to 0 */
  /* The connections. pool->lock guards the array and n: a slot changes
   * under it (a reconnect swaps in a new connection, the manager puts an
   * extra in an empty slot or empties an idle one), and slots are read
   * under it (pool_pick and every scan). A slot's connection may be used
   * without the lock by a thread that holds a pick on that slot
   * (pool_pick .. pool_unpick: the manager never empties a slot with
   * users), and by anyone once the pool is aborted or closing (slots are
   * then only emptied by pool_free, after the manager is joined). A
   * connection taken out of a slot by a reconnect is retired (freed at
   * close), so a stale pointer read before the swap stays valid. */
  unsigned n;                 /* lock: slots used so far (<= cap); a slot
                                 below n is NULL while empty (an idle
                                 extra closed, or never opened) */
  NbdConn **conns;            /* cap slots; CONN() reads one atomically */
  guint64 *serial;            /* lock: per slot, which connection is in it
                                 (new_serial at every change): what writes
                                 and flushes were counted against */
  guint64 next_serial;        /* lock */
  gint *users;                /* per slot: picks not yet released (raised
                                 under lock, dropped atomically) */
  gint *tracking;             /* per slot: WriteTracks naming it whose
                                 done has not run (atomic; dropped under
                                 lock with the count it adds): a reply
                                 leaves the connection's load before its
                                 done runs, and the manager must not take
                                 that for idle */
  gint64 *last_used;          /* lock: per slot, monotonic us of its last
                                 pick (the manager's idle clock) */
  gboolean *retiring;         /* lock: per slot, the manager is closing
                                 it: not picked */
  unsigned open_slots;        /* lock: slots holding a connection */
  gboolean grow_wanted;       /* lock: pool_pick asks the manager for one
                                 more connection */
  gint64 grow_after;          /* lock: monotonic us; no growth before
                                 (backoff after a failed open) */
  GCond mgr_cond;             /* with lock: wakes the manager */
  GThread *manager;           /* on demand (joined without the lock once
                                 closing) */
  /* Per connection slot (lock): writes acknowledged on the connection
   * now in the slot and not yet covered by a successful flush
   * (pool-flush.c "Durability"). */
  guint64 *unflushed_writes;
  guint64 *unflushed_bytes;
  /* The export's writeback error sequence (errseq_t model, pool-flush.c
   * "Durability"): counter << 1 | WB_SEEN. Written under lock, read with
   * g_atomic_int_get. */
  gint wb_err;
  unsigned rr;                /* lock: round-robin tie breaker */
  unsigned outstanding;       /* lock: pool-level requests not yet done */
  GQueue ranges;              /* lock: blocksize.c's range lock, RangeLock*
                                 holders and waiters in arrival order */

  /* Reconnect (cfg.reconnect > 0); all under lock. */
  GCond recond;               /* with lock: wakes backoff sleeps when
                                 closing or cut_at moves */
  gboolean closing;
  gboolean aborted;           /* nbdc_pool_abort: no more reconnects,
                                 no parking, connections killed */
  gint64 cut_at;              /* monotonic us: reconnects give up here
                                 (nbdc_pool_limit_reconnect); 0 = none */
  unsigned reconnecting;      /* reconnect threads at work */
  GQueue parked;              /* NbdcCmd* salvaged while reconnecting */
  GThread **rethreads;        /* per connection index (joined without the
                                 lock once closing is set) */
  GPtrArray *retired;         /* dead connections replaced (freed at close) */
  /* After a reconnect gave up: a request that fails for want of a
   * connection starts one quick attempt (at most one a second, one at a
   * time), so the mount comes back when the server does. */
  GThread *prober;            /* (joined without the lock once closing) */
  gboolean probing;
  gint64 probe_after;         /* monotonic us */
};

/* Sends one command on the least-loaded live connection (cmd->done is
 * called exactly once; EIO at once if no connection is alive). Writes
 * mark their connection dirty when they succeed. */
void pool_send_cmd (NbdPool *pool, const NbdcCmd *cmd);

/* A pool-level request made of several commands: done(opaque, err) runs
 * when the builder released it and every part finished; err is the first
 * error. flush_after: a successful result is followed by a pool flush
 * (FUA emulation). */
typedef struct {
  NbdPool *pool;
  NbdcDoneFn done;
  void *opaque;
  gint pending;
  gint err;
  gboolean flush_after;
  guint wb_at_start;          /* wb_err counter when the request began */
  void *owned;                /* g_free'd at the end (zero buffers...) */
  void (*cleanup) (void *);   /* called with owned if set, else g_free */
} NbdcParent;

NbdcParent *pool_parent_new (NbdPool *pool, NbdcDoneFn done, void *opaque);
void pool_parent_add (NbdcParent *p);
void pool_parent_part_done (void *opaque, int err);  /* an NbdcDoneFn */
/* Drops the builder's reference (after the last part was submitted). */
void pool_parent_release (NbdcParent *p);

/* The connection now in slot i (a reconnect may swap it any time). */
#define CONN(pool, i) ((NbdConn *) g_atomic_pointer_get (&(pool)->conns[i]))

/* wb_err's low bit: someone was told of the latest loss. */
#define WB_SEEN 1u

/* A write on its way: pool_write_tracked counts it, once acknowledged,
 * against the connection that acknowledged it (pool-flush.c). */
typedef struct {
  NbdPool *pool;
  unsigned idx;               /* the slot and the serial of the */
  guint64 serial;             /* connection it was last submitted on
                                 (pool_resubmit updates) */
  uint32_t count;
  NbdcDoneFn done;
  void *opaque;
} WriteTrack;

/* One synchronous request: SYNC_INIT, submit with pool_sync_done, then
 * pool_sync_wait for its result (0 or errno). */
typedef struct {
  GMutex lock;
  GCond cond;
  gboolean done;
  int err;
} SyncWait;

#define SYNC_INIT(w) do { g_mutex_init (&(w).lock); g_cond_init (&(w).cond); \
                          (w).done = FALSE; (w).err = 0; } while (0)

/* pool-flush.c */
guint pool_wb_counter (NbdPool *pool);
void pool_record_loss_locked (NbdPool *pool, const char *conn_name,
                              guint64 writes, guint64 bytes, const char *why);
void pool_flush_since (NbdPool *pool, guint since, NbdcDoneFn done,
                       void *opaque);
/* NBD_CMD_FLUSH on the connection in slot i (the caller keeps it there),
 * covering what was unflushed on it; waits. 0 or errno. */
int pool_flush_slot_sync (NbdPool *pool, unsigned i, NbdConn *conn);

/* pool-send.c */
void pool_write_tracked (void *opaque, int err);
/* The least-loaded live connection (ties round-robin), or -1 if none.
 * The caller then holds a pick on the slot: its connection (*conn, with
 * its *serial) stays there, usable without the lock, until
 * pool_unpick. On demand, asks the manager for one more connection when
 * every live one is busy (pool-grow.c). */
int pool_pick (NbdPool *pool, NbdConn **conn, guint64 *serial);
void pool_unpick (NbdPool *pool, int i);

/* pool-sync.c */
void pool_sync_done (void *opaque, int err);
int pool_sync_wait (SyncWait *w);

/* pool-reconnect.c */
char *pool_weaker (NbdPool *pool, const NbdExport *e);
void pool_resubmit (NbdPool *pool, const NbdcCmd *cmd);
/* Parks a command while a reconnect is under way; FALSE if none is. */
gboolean pool_park (NbdPool *pool, const NbdcCmd *cmd, gboolean fresh);
void pool_salvage (void *opaque, NbdConn *conn, const NbdcCmd *cmd);
/* No live connection and no reconnect under way: maybe try once more. */
void pool_probe (NbdPool *pool);
void pool_conn_dead (void *opaque, NbdConn *conn);

/* pool-grow.c: connections on demand */
void pool_manager_start (NbdPool *pool);
/* pool->lock held: call when pool_pick found every live connection
 * with best_load requests or more. */
void pool_maybe_grow_locked (NbdPool *pool, unsigned best_load);
/* pool->lock held: a fresh serial for a connection put in a slot. */
guint64 pool_new_serial_locked (NbdPool *pool);

/* pool.c */
NbdConn *pool_conn_new (NbdPool *pool, NbdTransport *t, const NbdExport *exp,
                        unsigned i);

#endif
