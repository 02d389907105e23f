/* nbdfs — fstab mount options: `-o connections=2,ro,_netdev` as mount(8)
 * and mount.fuse3 hand them to us ("nbdfs ADDRESS MNT -o OPTS").
 *
 * nbdfs's own options become long options, the options only mount(8) or
 * systemd read are dropped, everything else stays a FUSE/mount option for
 * libfuse. Pure: no I/O, no printing; the program layer calls it on argv
 * before parsing. */
#ifndef SYSTEM_MOUNT_OPTIONS_H
#define SYSTEM_MOUNT_OPTIONS_H

#include <glib.h>

/* Returns a new argv (g_strfreev) in which every "-o LIST", "-oLIST",
 * "--option=LIST" and "--option LIST" before a "--" is rewritten:
 *   connections=N -> --connections=N      ro, read-only -> --read-only
 *   name=F, timeout=S, reconnect=S, connect-timeout=S, tls=M,
 *   tls-certificates=D, tls-psk-file=F, tls-username=U, tls-hostname=H,
 *   pidfile=F -> --KEY=VALUE               all, tls-no-verify, verbose -> --KEY
 *   defaults, auto, noauto, nofail, user, users, nouser, owner, group,
 *   user=*, comment=*, x-*, _*  -> dropped (mount(8)/systemd only)
 *   anything else -> kept, joined into one "-o" for libfuse ("ro" is also
 *   kept: the kernel then refuses writes before they reach us).
 * A comma inside a value is written "\," (libfuse's escape). FALSE-like
 * NULL with NBDFS_ERROR_USAGE for a value missing, a value given to a
 * flag, or a kernel-mode option (persist, ioctl) in a mount. */
char **nbdfs_mount_options_expand (int argc, char *const *argv,
                                   GError **error);

#endif
