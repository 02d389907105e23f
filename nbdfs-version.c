/* nbdfs --version: ours and the versions of the libraries this process
 * runs with (not the headers it was built against: a bug report needs
 * what is loaded). */
#include <stdio.h>

#include <fuse_lowlevel.h>
#include <gnutls/gnutls.h>
#include <netlink/version.h>

#include "nbdfs.h"

void
nbdfs_print_version (void)
{
  printf ("nbdfs %s\n", NBDFS_VERSION);
  printf ("libfuse %s\n", fuse_pkgversion ());
  printf ("GnuTLS %s\n", gnutls_check_version (NULL));
  printf ("GLib %u.%u.%u\n", glib_major_version, glib_minor_version,
          glib_micro_version);
  printf ("libnl %d.%d.%d\n", nl_ver_maj, nl_ver_min, nl_ver_mic);
}
