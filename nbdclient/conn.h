/* nbdfs — one NBD connection in transmission phase (nbd-proto.md
 * "Transmission").
 *
 * Submitters never wait: a request goes into the connection's queue and
 * the call returns. A sender thread moves requests from the queue into the
 * in-flight table (bounded depth) and writes each one with a single
 * sendv (header + payload). A reader thread parses simple, structured and
 * extended replies, validates every chunk against the request it answers
 * (same checks whichever header carried it), and calls
 * done(opaque, err) once per request.
 *
 * Cookies are (generation << 32 | slot): a reply naming a free slot, or a
 * slot that has since been reused, is detected (cf. the kernel's
 * nbd_cmd_handle()). Any protocol violation, I/O error or timeout kills
 * the connection: every request on it then completes with EIO — or, if a
 * salvage function was set, is handed back untouched for resubmission on
 * another connection (reconnect).
 */
#ifndef NBDCLIENT_CONN_H
#define NBDCLIENT_CONN_H

#include <stdint.h>
#include <glib.h>
#include "nbdclient/negotiate.h"
#include "nbdclient/completion.h"
#include "nbdclient/transport.h"

typedef struct NbdConn NbdConn;

/* One NBD command as submitted. Copied by nbdc_conn_submit. */
typedef struct {
  uint16_t type;              /* NBD_CMD_* */
  uint16_t flags;             /* NBD_CMD_FLAG_* (already filtered) */
  uint64_t offset;
  /* READ / WRITE: at most the maximum payload. Others: the effect length,
   * above 2^32 - 1 only on a connection with extended headers (else
   * EINVAL: the compact header has 32 bits). */
  uint64_t count;
  void *buf;                  /* READ: count bytes to fill; WRITE: source */
  /* WRITE only, instead of buf: the payload is the first count bytes held
   * in the pipe whose read end is payload_pipe. Never consumed: each send
   * duplicates them (tee(2)) and moves the duplicate to the socket
   * (splice(2)), so the bytes go out by reference, never through our
   * memory, and are still there for a resend after a reconnect. The
   * submitter keeps the pipe, unchanged, until done. */
  gboolean in_pipe;
  int payload_pipe;
  NbdcExtentFn extent;        /* BLOCK_STATUS only */
  NbdcDoneFn done;            /* exactly once, 0 or errno */
  void *opaque;
  unsigned retries;           /* times salvaged so far (pool-reconnect.c bounds it) */
} NbdcCmd;

/* Called (outside any lock, possibly on the reader thread) for each
 * unfinished request when the connection dies of a transport failure
 * (EOF, reset, timeout) while a salvage function is set. The callee owns
 * the command from then on (it must eventually call cmd->done). Protocol
 * violations never salvage: a hostile server must not make us loop. */
typedef void (*NbdcSalvageFn) (void *opaque, NbdConn *conn,
                               const NbdcCmd *cmd);
/* Called once when the connection is declared dead (any cause, except
 * nbdc_conn_free), on the reader thread, just BEFORE its requests are
 * completed or salvaged (so a pool can start reconnecting and park them).
 * Must not free the connection. */
typedef void (*NbdcDeadFn) (void *opaque, NbdConn *conn);

typedef struct {
  unsigned max_in_flight;     /* 0 = 64 */
  unsigned request_timeout;   /* seconds: no byte from the server while a
                                 reply is owed, or any request in flight
                                 (sending included) for that long, kills
                                 the connection; 0 = never */
  NbdcSalvageFn salvage;      /* NULL = fail with EIO */
  NbdcDeadFn dead;            /* NULL = nothing */
  void *opaque;
  const char *name;           /* for log lines, e.g. "connection 2"; copied */
} NbdcConnConfig;

/* Takes over the transport (freed by nbdc_conn_free). exp must describe
 * what was negotiated on it (structured replies, base:allocation id);
 * copied. Starts the reader and sender threads. */
NbdConn *nbdc_conn_new (NbdTransport *t, const NbdExport *exp,
                        const NbdcConnConfig *cfg);

/* The largest pipe payload (NbdcCmd.in_pipe) a connection can send:
 * its scratch pipe must hold the request header and every page of the
 * payload at once (conn-splice.c). 0 if it has no such pipe (the pipe
 * size limit, /proc/sys/fs/pipe-max-size, applies to unprivileged users). */
size_t nbdc_conn_pipe_max (NbdConn *conn);

/* Queues one command; never blocks on the network. If the connection is
 * dead, completes at once with EIO (or salvages, see above). */
void nbdc_conn_submit (NbdConn *conn, const NbdcCmd *cmd);

gboolean nbdc_conn_is_alive (NbdConn *conn);
/* Requests queued + in flight (for least-loaded spreading). */
unsigned nbdc_conn_load (NbdConn *conn);

/* Waits until nothing is queued or in flight (or the connection died). */
void nbdc_conn_drain (NbdConn *conn);

/* Drains, sends NBD_CMD_DISC if still alive, stops and joins both
 * threads, frees everything. NULL is fine. */
void nbdc_conn_free (NbdConn *conn);

/* Kills the connection as if the server had broken it (tests, pool
 * shutdown after timeouts). reason goes into the warning. */
void nbdc_conn_kill (NbdConn *conn, const char *reason);

/* Soft disconnect (spec: after NBD_ESHUTDOWN the client "MUST initiate a
 * soft disconnect"): the sender sends NBD_CMD_DISC and shuts the
 * transport down; requests still on the connection are then salvaged or
 * fail with EIO, as for a lost server. The connection does this itself on
 * an NBD_ESHUTDOWN reply; a pool does it to its other connections. */
void nbdc_conn_soft_disconnect (NbdConn *conn, const char *reason);
/* TRUE once the server answered NBD_ESHUTDOWN on this connection. */
gboolean nbdc_conn_saw_eshutdown (NbdConn *conn);

#endif
