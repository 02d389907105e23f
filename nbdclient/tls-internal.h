/* nbdfs — what the TLS files share (not a public API).
 *
 * tls.c is the session after the handshake: the session lock, the
 * ciphertext buffers, the NbdTransport ops. tls-handshake.c starts a
 * session (nbdc_tls_start), with credentials from tls-creds.c and, when
 * it fails, the sentence tls-explain.c writes. tls-config.c holds the
 * configuration (command line and URI).
 */
#ifndef NBDCLIENT_TLS_INTERNAL_H
#define NBDCLIENT_TLS_INTERNAL_H

#include <pthread.h>

#include <glib.h>
#include <gnutls/gnutls.h>

#include "nbdclient/tls.h"

typedef enum { AUTH_X509, AUTH_PSK, AUTH_ANON } AuthKind;

/* One TLS connection. Fields without a lock are set before the handshake
 * (one thread) and only read afterwards, unless their comment says
 * otherwise; gnutls calls on session hold the session lock once
 * established. */
typedef struct {
  gnutls_session_t session;
  AuthKind kind;
  gnutls_certificate_credentials_t x509;
  gnutls_psk_client_credentials_t psk;
  gnutls_anon_client_credentials_t anon;
  int fd;
  gboolean have_client_cert;
  gboolean established;           /* handshake done: rx/tx in use */
  gboolean single_thread;         /* event-loop mode (relay): see tls.h */
  /* Every gnutls call after the handshake holds the session lock, a fair
   * ticket lock (lock/turn/next_ticket/now_serving). */
  pthread_mutex_t lock;
  pthread_cond_t turn;
  guint64 next_ticket, now_serving;
  int wake_fd;                    /* eventfd: shutdown wakes the receiver */
  int shut;                       /* atomic: set once by shutdown */
  int push_errno;                 /* last push error (session lock) */
  /* Ciphertext from the socket, waiting for gnutls (rx_lock): filled by
   * the receiver, RX_CAP bytes at most (tls.c). */
  pthread_mutex_t rx_lock;
  char *rx;
  size_t rx_start, rx_end, rx_high;
  gboolean rx_eof;
  int rx_errno;
  /* Ciphertext from gnutls, waiting for the socket (tx_lock): TX_CAP
   * bytes at most (tls.c). Lock order: session lock, then tx_lock. */
  pthread_mutex_t tx_lock;
  char *tx;
  size_t tx_start, tx_end, tx_high;
  int tx_errno;
  /* Data gnutls took from the last send whose records were still in tx
   * when that send returned EAGAIN: the next send (with the same bytes)
   * returns this count once tx is empty. Only the sending thread. */
  size_t owed;
  char stash[256];                /* application data read early (by
                                     the handshake; then only the
                                     receiving thread) */
  size_t stash_len, stash_off;
} TlsPriv;

/* tls-config.c */
AuthKind tls_config_kind (const NbdcTlsConfig *cfg);

/* tls.c, the session. tls_priv_new: locks, fd and wake_fd set; NULL
 * with error if no eventfd. tls_priv_free: also NULL, or a handshake
 * that failed. tls_priv_bind: before the handshake, gnutls reads and
 * writes through our pull/push functions. tls_priv_establish: after it,
 * rx and tx take over, and the returned transport owns p and p->fd. */
TlsPriv *tls_priv_new (int fd, GError **error);
void tls_priv_free (TlsPriv *p);
void tls_priv_bind (TlsPriv *p);
NbdTransport *tls_priv_establish (TlsPriv *p);

/* tls-creds.c */
gboolean tls_setup_x509 (TlsPriv *p, const NbdcTlsConfig *cfg,
                         GError **error);
gboolean tls_setup_psk (TlsPriv *p, const NbdcTlsConfig *cfg,
                        GError **error);

/* tls-explain.c */
gboolean tls_error (GError **error, const char *fmt, ...) G_GNUC_PRINTF (2, 3);
void tls_explain_failure (TlsPriv *p, int r, const char *hostname,
                          const NbdcTlsConfig *cfg, GError **error);

#endif
