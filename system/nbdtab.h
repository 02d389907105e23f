/* nbdfs — nbd-client's /etc/nbdtab, read so that a device configured for
 * nbd-client can be attached by nbdfs (nbdfs@nbd0.service) unchanged.
 *
 * Format (nbdtab(5) of nbd-client): one device per line, fields separated
 * by blanks, '#' starts a comment:
 *     DEVICE  HOST-OR-SOCKET  EXPORT  [OPTION,OPTION...]
 * Pure: the caller reads the file; the result is nbdfs arguments. */
#ifndef SYSTEM_NBDTAB_H
#define SYSTEM_NBDTAB_H

#include <glib.h>

typedef struct {
  char *device;      /* "/dev/nbd0" */
  char *address;     /* an NBD URI: nbd://host:port/export or
                        nbd+unix:///export?socket=PATH */
  char **args;       /* nbdfs options for the line's options, e.g.
                        { "--persist", "--connections=2", NULL } */
  char **warnings;   /* one sentence per option we ignore */
  unsigned line;     /* 1-based line number in the file */
} NbdfsNbdtabEntry;

void nbdfs_nbdtab_entry_clear (NbdfsNbdtabEntry *e);

/* Finds the first line for device ("nbd0" or "/dev/nbd0") in text (the
 * contents of the file named filename, used in messages) and translates
 * it. FALSE with NBDFS_ERROR_USAGE when no line names the device, the line
 * has too few or too many fields, or an option is refused or unknown. */
gboolean nbdfs_nbdtab_lookup (const char *text, const char *filename,
                              const char *device, NbdfsNbdtabEntry *out,
                              GError **error);

/* The same, reading path. */
gboolean nbdfs_nbdtab_load (const char *path, const char *device,
                            NbdfsNbdtabEntry *out, GError **error);

#endif
