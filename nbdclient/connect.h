/* nbdfs — open the socket: TCP (every address getaddrinfo returns, in
 * order, TCP_NODELAY and keepalive) or a Unix socket. */
#ifndef NBDCLIENT_CONNECT_H
#define NBDCLIENT_CONNECT_H

#include <glib.h>
#include "nbdclient/address.h"

/* Returns a connected blocking fd (CLOEXEC) or -1 with G_IO_ERROR /
 * NBDFS_ERROR_TIMEOUT; deadline as in transport.h. */
int nbdc_connect (const NbdAddress *addr, gint64 deadline, GError **error);

#endif
