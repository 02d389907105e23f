/* nbdfs — kernel mode internals shared by the kernelattach/ files.
 *
 * Plain integers only: <linux/nbd.h> and <linux/nbd-netlink.h> are included
 * by the .c files that talk to the kernel (netlink.c, ioctl.c), never here,
 * and never next to nbdclient/protocol.h (same names, different values).
 *
 *   device.c   device names, /sys/block/nbdN, the module check, state files
 *   netlink.c  generic netlink family "nbd": CONNECT, DISCONNECT,
 *              RECONFIGURE, STATUS, and the LINK_DEAD multicast
 *   ioctl.c    the NBD_SET_* / NBD_DO_IT fallback
 *   sockets.c  negotiate the connections the kernel gets
 *   persist.c  --persist: reconnect dead connections
 *   relay.c    TLS: the kernel gets a socketpair, one thread relays
 *   run.c      nbdfs --kernel: nbdk_start, nbdk_serve (attach.h)
 *   status.c   nbdfs --status (the data), nbdfs --disconnect
 */
#ifndef KERNELATTACH_KERNEL_H
#define KERNELATTACH_KERNEL_H

#include <stdint.h>
#include <glib.h>
#include <gio/gio.h>     /* G_IO_ERROR */
#include "kernelattach/attach.h"
#include "nbdclient/negotiate.h"

/* ---- device.c ---- */

/* "/dev/nbd3" or "nbd3" -> 3. FALSE + NBDFS_ERROR_USAGE otherwise. */
gboolean nbdk_device_parse (const char *name, int *index, GError **error);
/* TRUE if nbd.ko is loaded (or built in): /sys/module/nbd exists. */
gboolean nbdk_module_loaded (void);
/* The usual error when it is not. */
void nbdk_set_module_error (GError **error);
/* TRUE if /sys/block/nbdN exists. */
gboolean nbdk_device_exists (int index);
/* TRUE if the device has a configuration (sockets given, not yet torn
 * down): /sys/block/nbdN/pid exists. */
gboolean nbdk_device_attached (int index);
/* Contents of /sys/block/nbdN/ATTR without the trailing newline, or NULL. */
char *nbdk_device_sysfs (int index, const char *attr);
/* Indexes of every nbd device present, ascending (GArray of int). */
GArray *nbdk_device_list (void);

/* What nbdfs remembers about a device it attached (the kernel does not say
 * how many connections a device has, nor who supervises it):
 * /run/nbdfs/nbdN, key=value lines. Best effort: a missing file only means
 * "unknown" in --status. */
typedef struct {
  char *backend;          /* must equal /sys/block/nbdN/backend to count */
  unsigned connections;
  int daemon_pid;         /* --persist supervisor or ioctl NBD_DO_IT holder;
                             0 = none */
  gboolean ioctl;
  gboolean persist;
} NbdkState;

void nbdk_state_write (int index, const NbdkState *st);
/* FALSE if there is none, or it describes a previous attachment. */
gboolean nbdk_state_read (int index, NbdkState *st);
void nbdk_state_remove (int index);
void nbdk_state_clear (NbdkState *st);

/* ---- What the kernel is told (netlink.c, ioctl.c) ---- */

typedef struct {
  int index;                  /* -1: the kernel picks (netlink only) */
  uint64_t size;              /* bytes */
  uint64_t block_size;        /* 512..PAGE_SIZE, power of two */
  uint64_t server_flags;      /* transmission flags (+READ_ONLY for -r) */
  uint64_t client_flags;      /* NBD_CFLAG_* */
  uint64_t timeout;           /* seconds; 0: none */
  uint64_t dead_conn_timeout; /* seconds; 0: fail at once */
  const char *backend;        /* NBD_ATTR_BACKEND_IDENTIFIER */
  const int *fds;
  unsigned n_fds;
} NbdkAttach;

/* ---- netlink.c ---- */

typedef struct NbdkNetlink NbdkNetlink;

/* Connects to generic netlink and resolves family "nbd". Errors:
 * NBDFS_ERROR_UNSUPPORTED when the family is missing (module not loaded,
 * or a kernel without the netlink interface). */
NbdkNetlink *nbdk_nl_open (GError **error);
void nbdk_nl_close (NbdkNetlink *nl);
/* NBD_CMD_CONNECT; *index gets the device the kernel used. The kernel takes
 * its own references to the sockets: the caller may close its fds. */
gboolean nbdk_nl_connect (NbdkNetlink *nl, const NbdkAttach *a, int *index,
                          GError **error);
gboolean nbdk_nl_disconnect (NbdkNetlink *nl, int index, GError **error);
/* NBD_CMD_RECONFIGURE with new sockets: each replaces one dead connection
 * (a socket for which there is no dead slot is silently dropped by the
 * kernel). */
gboolean nbdk_nl_reconfigure (NbdkNetlink *nl, int index,
                              const char *backend, const int *fds,
                              unsigned n_fds, GError **error);

typedef struct {
  int index;
  gboolean connected;
} NbdkDeviceStatus;

/* NBD_CMD_STATUS for one device (index >= 0) or all (-1): GArray of
 * NbdkDeviceStatus. */
GArray *nbdk_nl_status (NbdkNetlink *nl, int index, GError **error);

/* Multicast: join "nbd_mc_group" (a second socket inside nl, so events
 * never mix with command replies). */
gboolean nbdk_nl_watch (NbdkNetlink *nl, GError **error);
/* fd to poll for events. */
int nbdk_nl_watch_fd (NbdkNetlink *nl);
/* Reads what is pending (non-blocking) and counts the NBD_CMD_LINK_DEAD
 * events about device want (other devices' are ignored): one per
 * connection that died. Returns that count, or -1 + error. */
int nbdk_nl_read_link_dead (NbdkNetlink *nl, int want, GError **error);

/* ---- ioctl.c ---- */

/* Opens /dev/nbdN and configures it (blksize, size, timeout, flags, each
 * socket). Returns the device fd (the caller runs nbdk_ioctl_do_it in the
 * process that will own the device), or -1 + error. */
int nbdk_ioctl_setup (const NbdkAttach *a, GError **error);
/* NBD_DO_IT: blocks until the device is disconnected; then clears the
 * queue and sockets. Returns 0 or an errno. */
int nbdk_ioctl_do_it (int devfd);
/* NBD_DISCONNECT on a device fd we hold (NBD_DO_IT then returns). */
void nbdk_ioctl_request_disconnect (int devfd);
/* NBD_DISCONNECT (+ NBD_CLEAR_SOCK) on /dev/nbdN. */
gboolean nbdk_ioctl_disconnect (int index, GError **error);

/* ---- sockets.c ---- */

/* Negotiates one connection for the kernel: simple replies only, no meta
 * contexts. Returns the connected, negotiated socket fd or -1 + error.
 * exp gets what the server said. Over TLS the fd is one end of a
 * socketpair relayed to the TLS session (relay.c). */
int nbdk_open_socket (const NbdcOptions *opts, NbdExport *exp,
                      GError **error);
/* Checks that a later connection (or a reconnection) reached the same
 * export: size and flags must not change. */
gboolean nbdk_same_export (const NbdExport *first, const NbdExport *later,
                           GError **error);
/* The block size to give the kernel, from the server's minimum block size
 * (the kernel then never sends a smaller or unaligned request), or FALSE +
 * error when the kernel cannot honour it. */
gboolean nbdk_block_size (const NbdExport *exp, uint64_t *bs, GError **error);
/* "nbd://host:port/export" or "nbd+unix:///export?socket=PATH": the
 * backend identifier (shown in /sys/block/nbdN/backend; a reconfigure
 * with another one is refused by the kernel). Caller frees. */
char *nbdk_backend_id (const NbdcOptions *opts);

/* ---- relay.c ---- */

/* Takes a TLS transport in transmission phase and returns the fd to give
 * the kernel (one end of a socketpair; the relay keeps the other), or -1 +
 * error (t freed). Connections added before nbdk_relay_start wait for it;
 * after, the running relay picks them up at once. */
int nbdk_relay_add (NbdTransport *t, GError **error);
/* TRUE while any connection is relayed (so this process must stay). */
gboolean nbdk_relay_active (void);
/* Starts the relay thread, in the process that will stay alive (after any
 * fork: threads do not survive one). No-op without connections. */
void nbdk_relay_start (void);
/* Blocks until every relayed connection has ended. */
void nbdk_relay_wait_idle (void);
/* Stops the thread and closes every connection. */
void nbdk_relay_stop (void);

/* ---- persist.c ---- */

typedef struct {
  NbdcOptions opts;           /* negotiation options (kernel flavour) */
  NbdExport exp;              /* what the first connection said */
  int index;
  char *backend;
} NbdkPersist;

/* Runs until the device is disconnected (returns 0) or a signal asks us to
 * stop (returns 0 too; the device stays attached). nl must already watch
 * the multicast group, from before the device was attached. */
int nbdk_persist_run (NbdkNetlink *nl, NbdkPersist *p);

#endif
