/* nbdfs — TLS with gnutls: X.509 and PSK, verified by default.
 *
 * Called by the negotiator right after the server acknowledged
 * NBD_OPT_STARTTLS ("TLS support" in nbd-proto.md). Returns a transport that
 * speaks TLS over fd, or FALSE with NBDFS_ERROR_TLS and a sentence that says
 * what failed (unknown CA, name mismatch, expired, bad PSK).
 */
#ifndef NBDCLIENT_TLS_H
#define NBDCLIENT_TLS_H

#include <glib.h>
#include "nbdclient/address.h"
#include "nbdclient/transport.h"

typedef struct {
  char *certificates;    /* dir with ca-cert.pem, client-cert.pem,
                            client-key.pem (libnbd/qemu names); NULL =
                            system trust store, no client certificate */
  char *psk_file;        /* psktool format "username:hexkey"; selects PSK */
  char *username;        /* PSK identity; default: the login name */
  char *hostname;        /* name to verify; NULL = the address's host */
  gboolean no_verify;    /* --tls-verify-peer=0 (anon-like; discouraged) */
  char *type;            /* URI tls-type: "x509", "psk", "anon"; NULL =
                            psk if psk_file is set, else x509 */
} NbdcTlsConfig;

void nbdc_tls_config_clear (NbdcTlsConfig *cfg);
void nbdc_tls_config_copy (NbdcTlsConfig *dst, const NbdcTlsConfig *src);

/* Fills what the command line left unset from the URI's query string
 * (tls-type, tls-certificates, tls-psk-file, tls-hostname, tls-verify-peer,
 * userinfo = tls-username): an explicit --tls-* option wins. Checks the
 * combination (psk needs a key file; not both a PSK file and a
 * certificates directory). main() calls it right after parsing the address.
 * FALSE with NBDFS_ERROR_USAGE. */
gboolean nbdc_tls_config_merge_uri (NbdcTlsConfig *cfg, const NbdAddress *addr,
                                    GError **error);

/* Performs the TLS handshake on fd. hostname is what to verify against
 * (cfg->hostname wins; X.509 with verification and no name at all, a Unix
 * socket without --tls-hostname, is refused with NBDFS_ERROR_TLS and a
 * sentence naming the option). On success the
 * returned transport owns fd; on failure fd is left open and the caller
 * closes it (negotiate does). deadline: see transport.h (0 = none). */
NbdTransport *nbdc_tls_start (int fd, const NbdcTlsConfig *cfg,
                              const char *hostname, gint64 deadline,
                              GError **error);

/* Event-loop mode (kernelattach/relay.c): from now on one thread alone
 * uses t, and no call waits. recv: -1 with EAGAIN when no whole record is
 * buffered (call it again when ops->pending says TRUE, else after poll
 * says the fd is ready for nbdc_tls_poll_events). send/sendv: take what
 * the outgoing buffer has room for, else -1 with EAGAIN (poll for
 * POLLOUT, then nbdc_tls_flush and try again). A server that stops
 * reading or floods us costs at most NBDC_TLS_BUFFER_MAX bytes and stalls
 * only its own connection. */
void nbdc_tls_set_single_thread (NbdTransport *t);
/* What to poll t->fd for: POLLIN while the receive buffer has room,
 * POLLOUT while encrypted bytes wait for the socket. */
short nbdc_tls_poll_events (NbdTransport *t);
/* Writes waiting encrypted bytes without blocking: 0 (maybe with bytes
 * left) or the socket's errno. */
int nbdc_tls_flush (NbdTransport *t);

/* Tests: called with every buffer that held key material (the PSK file)
 * after it was wiped, just before it is freed. NULL normally. */
extern void (*nbdc_tls_wipe_observer) (const void *buf, size_t len);

/* The ciphertext a TLS transport buffers is bounded by this (receive
 * plus send buffer), whatever the server sends or leaves unread. */
#define NBDC_TLS_BUFFER_MAX ((256 + 256 + 32 + 32) * 1024)
/* The most ciphertext t ever held in its buffers (tests check the bound). */
size_t nbdc_tls_buffered_high_water (NbdTransport *t);

#endif
