/* nbdfs — the byte transport under the protocol: plain socket or gnutls.
 *
 * All handshake and transmission I/O goes through NbdTransport so TLS slots
 * in after NBD_OPT_STARTTLS without the protocol code noticing (cf. libnbd's
 * struct socket_ops). One thread may receive while another sends.
 */
#ifndef NBDCLIENT_TRANSPORT_H
#define NBDCLIENT_TRANSPORT_H

#include <glib.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef struct NbdTransport NbdTransport;

typedef struct {
  /* Like recv(2)/send(2) on a blocking socket: >0 bytes, 0 at EOF (recv),
   * -1 with errno set. May return fewer bytes than asked. recv may also
   * fail with EAGAIN after a moment without progress (TLS: a record that
   * is still incomplete), like a socket with SO_RCVTIMEO: callers check
   * their own deadline and call again. */
  ssize_t (*recv) (NbdTransport *t, void *buf, size_t len);
  /* Optional (NULL = not offered): like recv, but fails with EAGAIN at
   * once instead of waiting when nothing is available (recv with
   * MSG_DONTWAIT). Lets the transmission reader skip a poll() per read
   * when bytes are already there. */
  ssize_t (*recv_nowait) (NbdTransport *t, void *buf, size_t len);
  /* send/sendv may likewise fail with EAGAIN after a moment in which
   * the server took nothing (TLS): check the deadline and call again
   * with the same bytes (TLS may have taken some already and finishes
   * them first, returning their count). */
  ssize_t (*send) (NbdTransport *t, const void *buf, size_t len);
  ssize_t (*sendv) (NbdTransport *t, const struct iovec *iov, int iovcnt);
  /* TRUE if bytes are already buffered inside the transport (TLS records),
   * so a poll() on the fd would wrongly block. */
  gboolean (*pending) (NbdTransport *t);
  /* Stops both directions (wakes a blocked reader); idempotent. */
  void (*shutdown) (NbdTransport *t);
  /* Releases private state; the fd is closed by nbdc_transport_free. */
  void (*free_priv) (NbdTransport *t);
  const char *name;      /* "plain", "tls" */
} NbdTransportOps;

struct NbdTransport {
  const NbdTransportOps *ops;
  int fd;                /* the socket underneath; -1 once stolen */
  void *priv;            /* TLS session etc. */
};

NbdTransport *nbdc_transport_plain_new (int fd);
gboolean nbdc_transport_is_tls (const NbdTransport *t);
/* Closes everything. NULL is fine. */
void nbdc_transport_free (NbdTransport *t);
/* Plain transports only: takes the fd out (for the kernel), frees the rest. */
int nbdc_transport_steal_fd (NbdTransport *t);
void nbdc_transport_shutdown (NbdTransport *t);

/* Blocking helpers for the handshake. deadline is g_get_monotonic_time()
 * based (microseconds), 0 = none; past it, NBDFS_ERROR_TIMEOUT. "what" names
 * what was being read, for the message ("reading option reply header"). A
 * clean EOF is "server closed the connection while <what>". */
gboolean nbdc_read_full (NbdTransport *t, void *buf, size_t len,
                         gint64 deadline, const char *what, GError **error);
gboolean nbdc_write_full (NbdTransport *t, const void *buf, size_t len,
                          gint64 deadline, const char *what, GError **error);

#endif
