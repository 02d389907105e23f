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

/* sendv hands gnutls at most this much per call while corked, so header and
 * payload share records without copying a whole 32 MiB write at once. */
#define SENDV_CHUNK (256 * 1024)
/* A record carries at most 2^14 bytes of data (RFC 8446 5.1, RFC 5246
 * 6.2.1); what encryption adds to it (header, explicit IV, MAC or tag,
 * CBC padding) stays well below this. */
#define RECORD_DATA 16384
#define RECORD_OVERHEAD 512
/* The ciphertext buffers (nbdc_tls_buffer_max in tls.h is their sum).
 * rx holds several whole records (one is at most 5 + 2^14 + 2048 bytes,
 * RFC 5246 6.2.3), so a full rx always lets gnutls make progress. tx
 * holds a sendv chunk plus TX_RESERVE that senders leave free for what
 * gnutls sends on its own while receiving (KeyUpdate answers, alerts). */
#define RX_CAP (256 * 1024)
#define TX_RESERVE (32 * 1024)
#define TX_CAP (SENDV_CHUNK + SENDV_CHUNK / 8 + TX_RESERVE)
G_STATIC_ASSERT (RX_CAP + TX_CAP == NBDC_TLS_BUFFER_MAX);

typedef enum { AUTH_X509, AUTH_PSK, AUTH_ANON } AuthKind;

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
   * the receiver, RX_CAP bytes at most. */
  pthread_mutex_t rx_lock;
  char *rx;
  size_t rx_start, rx_end, rx_high;
  gboolean rx_eof;
  int rx_errno;
  /* Ciphertext from gnutls, waiting for the socket (tx_lock): TX_CAP
   * bytes at most. Lock order: session lock, then tx_lock. */
  pthread_mutex_t tx_lock;
  char *tx;
  size_t tx_start, tx_end, tx_high;
  int tx_errno;
  /* Data gnutls took from the last send whose records were still in tx
   * when that send returned EAGAIN: the next send (with the same bytes)
   * returns this count once tx is empty. Only the sending thread. */
  size_t owed;
  char stash[256];                /* application data read early */
  size_t stash_len, stash_off;
} TlsPriv;


/* tls-config.c */
AuthKind tls_config_kind (const NbdcTlsConfig *cfg);

/* tls.c */
extern const NbdTransportOps tls_ops;
ssize_t tls_pull (gnutls_transport_ptr_t ptr, void *buf, size_t len);
int tls_pull_timeout (gnutls_transport_ptr_t ptr, unsigned ms);
ssize_t tls_vec_push (gnutls_transport_ptr_t ptr, const giovec_t *iov,
                      int iovcnt);
void tls_priv_free (TlsPriv *p);

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
