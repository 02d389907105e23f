/* nbdfs — how a request reports back: the callback types shared by the
 * pool (pool.h, the API) and one connection (conn.h, below it), so the
 * lower layer needs nothing from the upper one.
 */
#ifndef NBDCLIENT_COMPLETION_H
#define NBDCLIENT_COMPLETION_H

#include <stdint.h>

/* Called exactly once per request: err is 0 or a positive errno. */
typedef void (*NbdcDoneFn) (void *opaque, int err);
/* One base:allocation extent (flags: NBD_STATE_HOLE | NBD_STATE_ZERO),
 * validated to lie inside the requested range, in order. */
typedef void (*NbdcExtentFn) (void *opaque, uint64_t offset, uint64_t length,
                              uint32_t flags);

#endif
