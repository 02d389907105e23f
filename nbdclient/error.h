/* nbdfs — the NBDFS_ERROR GError domain (control path only).
 *
 * Syscall failures use G_IO_ERROR (g_io_error_from_errno); protocol-level
 * outcomes use these codes, mapped from NBD_REP_ERR_* the way libnbd's
 * states-newstyle-opt-go.c does. Messages read as one sentence for a user;
 * layers add context with g_prefix_error ("negotiating with %s: ").
 */
#ifndef NBDCLIENT_ERROR_H
#define NBDCLIENT_ERROR_H

#include <glib.h>

#define NBDFS_ERROR (nbdfs_error_quark ())
GQuark nbdfs_error_quark (void);

typedef enum {
  NBDFS_ERROR_PROTOCOL,        /* the server broke the protocol */
  NBDFS_ERROR_REFUSED,         /* the server said no (policy, invalid, ...) */
  NBDFS_ERROR_TLS_REQUIRED,    /* NBD_REP_ERR_TLS_REQD, or we require TLS
                                  and the server cannot give it */
  NBDFS_ERROR_NO_SUCH_EXPORT,  /* NBD_REP_ERR_UNKNOWN */
  NBDFS_ERROR_UNSUPPORTED,     /* feature not offered by the server */
  NBDFS_ERROR_TLS,             /* certificate, PSK, handshake failures */
  NBDFS_ERROR_TIMEOUT,         /* connect/handshake deadline passed */
  NBDFS_ERROR_USAGE,           /* bad address, bad option value */
  NBDFS_ERROR_KERNEL,          /* kernel refused an attach step */
  NBDFS_ERROR_FAILED,          /* anything else */
} NbdfsErrorCode;

#endif
