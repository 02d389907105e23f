/* nbdfs — kernel mode as a library: hand negotiated sockets to the kernel
 * nbd driver, show and detach devices. The program layer (nbdfs-kernel.c)
 * calls these; nothing here prints: errors come back as GError, messages
 * go to GLib's log. <linux/nbd.h> and <linux/nbd-netlink.h> are included
 * only inside kernelattach/ sources. */
#ifndef KERNELATTACH_ATTACH_H
#define KERNELATTACH_ATTACH_H

#include <stdint.h>
#include <glib.h>
#include "nbdclient/negotiate.h"
#include "nbdclient/pool.h"

/* What kernel mode needs to know; the caller keeps it (and what it points
 * to) alive until nbdk_free. */
typedef struct {
  const NbdcOptions *nbd;       /* address, TLS, handshake timeout */
  /* connections (0: 4 if the server allows multi-conn, else 1),
   * request_timeout (0: none, or 30 s with persist), read_only;
   * reconnect is FUSE mode's and ignored here. */
  const NbdcPoolConfig *pool;
  const char *device;           /* "/dev/nbdN", "nbdN" or NULL: any */
  gboolean persist;             /* reconnect dead connections */
  gboolean use_ioctl;           /* NBD_SET_* / NBD_DO_IT, not netlink */
} NbdkOptions;

typedef struct NbdkRun NbdkRun;

/* Checks what can be checked before any network traffic (root, nbd.ko,
 * the device), then negotiates the connections. Nothing is attached yet.
 * Returns NULL + error. */
NbdkRun *nbdk_start (const NbdkOptions *o, GError **error);
/* TRUE if a process must stay once the device is attached: --persist (the
 * supervisor), TLS (the relay) or --ioctl (NBD_DO_IT). Then the caller
 * may daemonise before nbdk_serve; threads start only in nbdk_serve. */
gboolean nbdk_must_stay (NbdkRun *run);

/* Called once the device is up, with its index, in the process that stays
 * (if any). FALSE + error: nbdk_serve detaches the device again. */
typedef gboolean (*NbdkReadyFn) (int index, void *data, GError **error);
/* Attaches the device, calls ready, then (nbdk_must_stay) serves until
 * the device is detached or, with --persist, SIGTERM/SIGINT stop the
 * supervisor. Returns 0 or -1 + error. */
int nbdk_serve (NbdkRun *run, NbdkReadyFn ready, void *data, GError **error);
void nbdk_free (NbdkRun *run);

/* nbdfs --disconnect DEVICE ("/dev/nbd0" or "nbd0"). */
gboolean nbdk_disconnect (const char *device, GError **error);

/* One device, for nbdfs --status. */
typedef struct {
  int index;
  gboolean attached;
  uint64_t size;              /* bytes */
  long pid;                   /* /sys/block/nbdN/pid */
  char *backend;              /* NULL if unknown */
  /* From nbdfs's state file (have_state), else unknown: */
  gboolean have_state;
  unsigned connections;
  int daemon_pid;             /* supervisor or NBD_DO_IT holder; 0: none */
  gboolean ioctl;
  gboolean persist;
} NbdkDeviceInfo;

/* The devices (every one present, or only DEVICE when given: then
 * *only is its index, else -1), as a GArray of NbdkDeviceInfo that frees
 * its elements. NULL + error. */
GArray *nbdk_status (const char *device, int *only, GError **error);

#endif
