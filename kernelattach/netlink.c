/* nbdfs — kernel mode over generic netlink, family "nbd" (libnl-genl-3).
 *
 * The interface of <linux/nbd-netlink.h>: NBD_CMD_CONNECT hands the
 * negotiated sockets to the driver, NBD_CMD_RECONFIGURE replaces dead
 * ones, NBD_CMD_DISCONNECT and NBD_CMD_STATUS do what they say, and the
 * driver multicasts NBD_CMD_LINK_DEAD on "nbd_mc_group" whenever a
 * connection dies (that is what --persist listens for). Every attribute is
 * declared in include/uapi/linux/nbd-netlink.h in Linux; the kernel's own
 * policy (drivers/block/nbd.c, nbd_attr_policy) is what counts (sizes u64,
 * index u32, fds u32 nested twice).
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/netlink.h>
#include <linux/nbd-netlink.h>

#include "kernelattach/kernel.h"
#include "nbdclient/error.h"

struct NbdkNetlink {
  struct nl_sock *cmd;      /* requests and their replies */
  struct nl_sock *events;   /* multicast LINK_DEAD, once watching */
  int family;
};

void
nbdk_nl_close (NbdkNetlink *nl)
{
  if (nl == NULL)
    return;
  if (nl->cmd)
    nl_socket_free (nl->cmd);
  if (nl->events)
    nl_socket_free (nl->events);
  g_free (nl);
}

NbdkNetlink *
nbdk_nl_open (GError **error)
{
  NbdkNetlink *nl = g_new0 (NbdkNetlink, 1);
  int r;

  nl->cmd = nl_socket_alloc ();
  if (nl->cmd == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED,
                 "cannot allocate a netlink socket");
    goto fail;
  }
  if ((r = genl_connect (nl->cmd)) < 0) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED,
                 "generic netlink: %s", nl_geterror (r));
    goto fail;
  }
  nl->family = genl_ctrl_resolve (nl->cmd, NBD_GENL_FAMILY_NAME);
  if (nl->family < 0) {
    /* The family appears when nbd.ko loads (kernels >= 4.12). */
    if (!nbdk_module_loaded ())
      nbdk_set_module_error (error);
    else
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED,
                   "this kernel's nbd driver has no netlink interface "
                   "(generic netlink family \"nbd\"): use --ioctl");
    goto fail;
  }
  return nl;

 fail:
  nbdk_nl_close (nl);
  return NULL;
}

/* One request and its answer: the reply's attributes go to parse_fn
 * (if any); an NLMSG_ERROR sets *err to its errno. */
typedef struct {
  int err;
  gboolean done;
  int (*parse_fn) (struct nlattr **tb, void *opaque);
  void *opaque;
} Transaction;

static int
on_valid (struct nl_msg *msg, void *arg)
{
  Transaction *t = arg;
  struct nlattr *tb[NBD_ATTR_MAX + 1];

  if (genlmsg_parse (nlmsg_hdr (msg), 0, tb, NBD_ATTR_MAX, NULL) < 0) {
    g_debug ("netlink: unparseable reply");
    return NL_SKIP;
  }
  if (t->parse_fn)
    return t->parse_fn (tb, t->opaque);
  return NL_OK;
}

static int
on_error (struct sockaddr_nl *nla, struct nlmsgerr *e, void *arg)
{
  Transaction *t = arg;
  t->err = -e->error;
  t->done = TRUE;
  return NL_STOP;
}

static int
on_ack (struct nl_msg *msg, void *arg)
{
  Transaction *t = arg;
  t->done = TRUE;
  return NL_STOP;
}

/* A private copy of the socket's callbacks (nl_socket_get_cb takes a
 * reference, which must be dropped). */
static struct nl_cb *
clone_cb (struct nl_sock *sk)
{
  struct nl_cb *orig = nl_socket_get_cb (sk);
  struct nl_cb *cb = nl_cb_clone (orig);
  nl_cb_put (orig);
  return cb;
}

/* Sends msg (consumed) and waits for the kernel's ACK or error. Returns 0
 * or an errno. */
static int
transact (NbdkNetlink *nl, struct nl_msg *msg,
          int (*parse_fn) (struct nlattr **, void *), void *opaque)
{
  Transaction t = { .parse_fn = parse_fn, .opaque = opaque };
  struct nl_cb *cb;
  int r;

  r = nl_send_auto (nl->cmd, msg);
  nlmsg_free (msg);
  if (r < 0)
    return EIO;
  cb = clone_cb (nl->cmd);
  if (cb == NULL)
    return ENOMEM;
  nl_cb_set (cb, NL_CB_VALID, NL_CB_CUSTOM, on_valid, &t);
  nl_cb_set (cb, NL_CB_ACK, NL_CB_CUSTOM, on_ack, &t);
  nl_cb_err (cb, NL_CB_CUSTOM, on_error, &t);
  while (!t.done) {
    r = nl_recvmsgs (nl->cmd, cb);
    if (r < 0 && !t.done) {
      t.err = EIO;
      g_debug ("netlink: receiving the reply: %s", nl_geterror (r));
      break;
    }
  }
  nl_cb_put (cb);
  return t.err;
}

static struct nl_msg *
new_request (NbdkNetlink *nl, uint8_t cmd)
{
  struct nl_msg *msg = nlmsg_alloc ();
  if (msg == NULL)
    return NULL;
  if (genlmsg_put (msg, NL_AUTO_PORT, NL_AUTO_SEQ, nl->family, 0, 0, cmd,
                   NBD_GENL_VERSION) == NULL) {
    nlmsg_free (msg);
    return NULL;
  }
  return msg;
}

static gboolean
put_sockets (struct nl_msg *msg, const int *fds, unsigned n)
{
  struct nlattr *socks = nla_nest_start (msg, NBD_ATTR_SOCKETS);
  if (socks == NULL)
    return FALSE;
  for (unsigned i = 0; i < n; i++) {
    struct nlattr *item = nla_nest_start (msg, NBD_SOCK_ITEM);
    if (item == NULL || nla_put_u32 (msg, NBD_SOCK_FD, (uint32_t) fds[i]) < 0)
      return FALSE;
    nla_nest_end (msg, item);
  }
  nla_nest_end (msg, socks);
  return TRUE;
}

static int
parse_index (struct nlattr **tb, void *opaque)
{
  if (tb[NBD_ATTR_INDEX])
    *(int *) opaque = (int) nla_get_u32 (tb[NBD_ATTR_INDEX]);
  return NL_OK;
}

static void
set_kernel_error (GError **error, int err, const char *what, int index)
{
  g_autofree char *dev = index >= 0 ? g_strdup_printf ("/dev/nbd%d", index)
                                    : g_strdup ("a free nbd device");
  switch (err) {
  case EBUSY:
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                 "%s is already attached (nbdfs --status %s; detach it with "
                 "nbdfs --disconnect %s)", dev, dev, dev);
    break;
  case EPERM:
  case EACCES:
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                 "%s %s: permission denied (kernel mode needs root)",
                 what, dev);
    break;
  default:
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                 "%s %s: the kernel said: %s", what, dev, g_strerror (err));
  }
}

gboolean
nbdk_nl_connect (NbdkNetlink *nl, const NbdkAttach *a, int *index,
                 GError **error)
{
  struct nl_msg *msg = new_request (nl, NBD_CMD_CONNECT);
  int got = -1, err;

  if (msg == NULL)
    goto nomem;
  if ((a->index >= 0 && nla_put_u32 (msg, NBD_ATTR_INDEX, a->index) < 0)
      || nla_put_u64 (msg, NBD_ATTR_SIZE_BYTES, a->size) < 0
      || nla_put_u64 (msg, NBD_ATTR_BLOCK_SIZE_BYTES, a->block_size) < 0
      || nla_put_u64 (msg, NBD_ATTR_SERVER_FLAGS, a->server_flags) < 0
      || nla_put_u64 (msg, NBD_ATTR_CLIENT_FLAGS, a->client_flags) < 0
      || (a->timeout
          && nla_put_u64 (msg, NBD_ATTR_TIMEOUT, a->timeout) < 0)
      || (a->dead_conn_timeout
          && nla_put_u64 (msg, NBD_ATTR_DEAD_CONN_TIMEOUT,
                          a->dead_conn_timeout) < 0)
      || (a->backend
          && nla_put_string (msg, NBD_ATTR_BACKEND_IDENTIFIER,
                             a->backend) < 0)
      || !put_sockets (msg, a->fds, a->n_fds)) {
    nlmsg_free (msg);
    goto nomem;
  }
  g_debug ("netlink: connect index %d size %" G_GUINT64_FORMAT " block %"
           G_GUINT64_FORMAT " flags 0x%" G_GINT64_MODIFIER "x timeout %"
           G_GUINT64_FORMAT " dead-conn %" G_GUINT64_FORMAT " sockets %u"
           " backend %s", a->index, a->size, a->block_size, a->server_flags,
           a->timeout, a->dead_conn_timeout, a->n_fds, a->backend);
  err = transact (nl, msg, parse_index, &got);
  if (err) {
    set_kernel_error (error, err, "attaching", a->index);
    return FALSE;
  }
  if (got < 0)
    got = a->index;
  if (got < 0) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                 "the kernel attached a device but did not say which");
    return FALSE;
  }
  *index = got;
  return TRUE;

 nomem:
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED,
               "cannot build the netlink request");
  return FALSE;
}

gboolean
nbdk_nl_disconnect (NbdkNetlink *nl, int index, GError **error)
{
  struct nl_msg *msg = new_request (nl, NBD_CMD_DISCONNECT);
  int err;

  if (msg == NULL || nla_put_u32 (msg, NBD_ATTR_INDEX, index) < 0) {
    nlmsg_free (msg);
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED,
                 "cannot build the netlink request");
    return FALSE;
  }
  err = transact (nl, msg, NULL, NULL);
  if (err) {
    set_kernel_error (error, err, "detaching", index);
    return FALSE;
  }
  return TRUE;
}

gboolean
nbdk_nl_reconfigure (NbdkNetlink *nl, int index, const char *backend,
                     const int *fds, unsigned n_fds, GError **error)
{
  struct nl_msg *msg = new_request (nl, NBD_CMD_RECONFIGURE);
  int err;

  if (msg == NULL || nla_put_u32 (msg, NBD_ATTR_INDEX, index) < 0
      || (backend
          && nla_put_string (msg, NBD_ATTR_BACKEND_IDENTIFIER, backend) < 0)
      || !put_sockets (msg, fds, n_fds)) {
    nlmsg_free (msg);
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED,
                 "cannot build the netlink request");
    return FALSE;
  }
  err = transact (nl, msg, NULL, NULL);
  if (err) {
    set_kernel_error (error, err, "reconnecting", index);
    return FALSE;
  }
  return TRUE;
}

static int
parse_status (struct nlattr **tb, void *opaque)
{
  GArray *list = opaque;
  struct nlattr *item;
  int rem;

  if (tb[NBD_ATTR_DEVICE_LIST] == NULL)
    return NL_OK;
  nla_for_each_nested (item, tb[NBD_ATTR_DEVICE_LIST], rem) {
    struct nlattr *dev[NBD_DEVICE_ATTR_MAX + 1];
    NbdkDeviceStatus st = { 0 };

    if (nla_type (item) != NBD_DEVICE_ITEM
        || nla_parse_nested (dev, NBD_DEVICE_ATTR_MAX, item, NULL) < 0
        || dev[NBD_DEVICE_INDEX] == NULL)
      continue;
    st.index = (int) nla_get_u32 (dev[NBD_DEVICE_INDEX]);
    st.connected = dev[NBD_DEVICE_CONNECTED]
      && nla_get_u8 (dev[NBD_DEVICE_CONNECTED]) != 0;
    g_array_append_val (list, st);
  }
  return NL_OK;
}

GArray *
nbdk_nl_status (NbdkNetlink *nl, int index, GError **error)
{
  struct nl_msg *msg = new_request (nl, NBD_CMD_STATUS);
  GArray *list;
  int err;

  if (msg == NULL
      || (index >= 0 && nla_put_u32 (msg, NBD_ATTR_INDEX, index) < 0)) {
    nlmsg_free (msg);
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED,
                 "cannot build the netlink request");
    return NULL;
  }
  list = g_array_new (FALSE, FALSE, sizeof (NbdkDeviceStatus));
  err = transact (nl, msg, parse_status, list);
  if (err) {
    g_array_unref (list);
    set_kernel_error (error, err, "asking about", index);
    return NULL;
  }
  return list;
}

/* ---- the LINK_DEAD multicast ---- */

gboolean
nbdk_nl_watch (NbdkNetlink *nl, GError **error)
{
  int grp, r;

  grp = genl_ctrl_resolve_grp (nl->cmd, NBD_GENL_FAMILY_NAME,
                               NBD_GENL_MCAST_GROUP_NAME);
  if (grp < 0) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_UNSUPPORTED,
                 "the nbd driver has no multicast group \"%s\": %s",
                 NBD_GENL_MCAST_GROUP_NAME, nl_geterror (grp));
    return FALSE;
  }
  nl->events = nl_socket_alloc ();
  if (nl->events == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED,
                 "cannot allocate a netlink socket");
    return FALSE;
  }
  /* Events are not answers to our requests: no sequence numbers. */
  nl_socket_disable_seq_check (nl->events);
  if ((r = genl_connect (nl->events)) < 0
      || (r = nl_socket_add_membership (nl->events, grp)) < 0
      || (r = nl_socket_set_nonblocking (nl->events)) < 0) {
    g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                 "joining the nbd multicast group: %s", nl_geterror (r));
    return FALSE;
  }
  return TRUE;
}

int
nbdk_nl_watch_fd (NbdkNetlink *nl)
{
  return nl->events ? nl_socket_get_fd (nl->events) : -1;
}

typedef struct {
  int want;
  int count;
} LinkDead;

static int
on_event (struct nl_msg *msg, void *arg)
{
  LinkDead *ld = arg;
  struct genlmsghdr *gh = nlmsg_data (nlmsg_hdr (msg));
  struct nlattr *tb[NBD_ATTR_MAX + 1];

  if (gh->cmd != NBD_CMD_LINK_DEAD
      || genlmsg_parse (nlmsg_hdr (msg), 0, tb, NBD_ATTR_MAX, NULL) < 0
      || tb[NBD_ATTR_INDEX] == NULL)
    return NL_SKIP;
  int index = (int) nla_get_u32 (tb[NBD_ATTR_INDEX]);
  g_debug ("netlink: link dead on /dev/nbd%d", index);
  if (index == ld->want)
    ld->count++;
  return NL_OK;
}

int
nbdk_nl_read_link_dead (NbdkNetlink *nl, int want, GError **error)
{
  LinkDead ld = { .want = want };
  struct nl_cb *cb = clone_cb (nl->events);
  int r;

  if (cb == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "out of memory");
    return -1;
  }
  nl_cb_set (cb, NL_CB_VALID, NL_CB_CUSTOM, on_event, &ld);
  for (;;) {
    r = nl_recvmsgs (nl->events, cb);
    if (r == -NLE_AGAIN)
      break;
    if (r < 0) {
      /* NLE_NOMEM here is ENOBUFS: the socket overflowed and events were
       * lost. Say "something died" so the caller rechecks. */
      if (r == -NLE_NOMEM) {
        g_debug ("netlink: multicast overflow, events lost");
        ld.count++;
        break;
      }
      nl_cb_put (cb);
      g_set_error (error, NBDFS_ERROR, NBDFS_ERROR_KERNEL,
                   "reading nbd netlink events: %s", nl_geterror (r));
      return -1;
    }
  }
  nl_cb_put (cb);
  return ld.count;
}
