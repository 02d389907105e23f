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
 * (cfg->hostname wins; NULL with no override for Unix sockets = verify the
 * chain only: any certificate the CA signed is accepted). On success the
 * returned transport owns fd; on failure fd is left open and the caller
 * closes it (negotiate does). deadline: see transport.h (0 = none). */
NbdTransport *nbdc_tls_start (int fd, const NbdcTlsConfig *cfg,
                              const char *hostname, gint64 deadline,
                              GError **error);

/* Event-loop mode (kernelattach/relay.c): from now on one thread alone
 * uses t. recv never blocks: -1 with EAGAIN when no whole record is
 * buffered (then wait for POLLIN on t->fd, but call recv first whenever
 * ops->pending says TRUE: a send may have drained the socket). send still
 * blocks until written, but drains incoming ciphertext meanwhile, so two
 * peers writing at each other cannot deadlock; a server that takes nothing
 * for 60 s makes it fail with ETIMEDOUT (one stalled server must not stall
 * the other connections of the loop for ever). */
void nbdc_tls_set_single_thread (NbdTransport *t);

#endif
