/* nbdfs — the NBDFS_ERROR GError domain. */
#include "nbdclient/error.h"

G_DEFINE_QUARK (nbdfs-error-quark, nbdfs_error)
