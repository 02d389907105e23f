/* nbdfs — numbers to names, NBD_E* <-> errno (nbd-proto.md "Values"),
 * and making server text safe to print. */
#include <errno.h>
#include <string.h>

#include "nbdclient/names.h"
#include "nbdclient/protocol.h"

const char *
nbdc_opt_name (uint32_t opt)
{
  switch (opt) {
  case NBD_OPT_EXPORT_NAME: return "export name";
  case NBD_OPT_ABORT: return "abort";
  case NBD_OPT_LIST: return "list";
  case NBD_OPT_PEEK_EXPORT: return "peek export";
  case NBD_OPT_STARTTLS: return "starttls";
  case NBD_OPT_INFO: return "info";
  case NBD_OPT_GO: return "go";
  case NBD_OPT_STRUCTURED_REPLY: return "structured reply";
  case NBD_OPT_LIST_META_CONTEXT: return "list meta context";
  case NBD_OPT_SET_META_CONTEXT: return "set meta context";
  case NBD_OPT_EXTENDED_HEADERS: return "extended headers";
  default: return "unknown";
  }
}

const char *
nbdc_rep_name (uint32_t rep)
{
  switch (rep) {
  case NBD_REP_ACK: return "ack";
  case NBD_REP_SERVER: return "server";
  case NBD_REP_INFO: return "info";
  case NBD_REP_META_CONTEXT: return "meta context";
  case NBD_REP_ERR_UNSUP: return "unsupported";
  case NBD_REP_ERR_POLICY: return "denied by policy";
  case NBD_REP_ERR_INVALID: return "invalid";
  case NBD_REP_ERR_PLATFORM: return "not supported on this platform";
  case NBD_REP_ERR_TLS_REQD: return "TLS required";
  case NBD_REP_ERR_UNKNOWN: return "export unknown";
  case NBD_REP_ERR_SHUTDOWN: return "server shutting down";
  case NBD_REP_ERR_BLOCK_SIZE_REQD: return "block size required";
  case NBD_REP_ERR_TOO_BIG: return "too big";
  case NBD_REP_ERR_EXT_HEADER_REQD: return "extended headers required";
  default:
    return (rep & NBD_REP_FLAG_ERROR) ? "unknown error" : "unknown";
  }
}

const char *
nbdc_info_name (uint16_t info)
{
  switch (info) {
  case NBD_INFO_EXPORT: return "export";
  case NBD_INFO_NAME: return "name";
  case NBD_INFO_DESCRIPTION: return "description";
  case NBD_INFO_BLOCK_SIZE: return "block size";
  default: return "unknown";
  }
}

const char *
nbdc_cmd_name (uint16_t cmd)
{
  switch (cmd) {
  case NBD_CMD_READ: return "read";
  case NBD_CMD_WRITE: return "write";
  case NBD_CMD_DISC: return "disconnect";
  case NBD_CMD_FLUSH: return "flush";
  case NBD_CMD_TRIM: return "trim";
  case NBD_CMD_CACHE: return "cache";
  case NBD_CMD_WRITE_ZEROES: return "write zeroes";
  case NBD_CMD_BLOCK_STATUS: return "block status";
  case NBD_CMD_RESIZE: return "resize";
  default: return "unknown";
  }
}

const char *
nbdc_reply_type_name (uint16_t type)
{
  switch (type) {
  case NBD_REPLY_TYPE_NONE: return "none";
  case NBD_REPLY_TYPE_OFFSET_DATA: return "offset data";
  case NBD_REPLY_TYPE_OFFSET_HOLE: return "offset hole";
  case NBD_REPLY_TYPE_BLOCK_STATUS: return "block status";
  case NBD_REPLY_TYPE_BLOCK_STATUS_EXT: return "extended block status";
  case NBD_REPLY_TYPE_ERROR: return "error";
  case NBD_REPLY_TYPE_ERROR_OFFSET: return "error offset";
  default:
    return NBD_REPLY_TYPE_IS_ERR (type) ? "unknown error" : "unknown";
  }
}

const char *
nbdc_err_name (uint32_t err)
{
  switch (err) {
  case NBD_SUCCESS: return "success";
  case NBD_EPERM: return "EPERM";
  case NBD_EIO: return "EIO";
  case NBD_ENOMEM: return "ENOMEM";
  case NBD_EINVAL: return "EINVAL";
  case NBD_ENOSPC: return "ENOSPC";
  case NBD_EOVERFLOW: return "EOVERFLOW";
  case NBD_ENOTSUP: return "ENOTSUP";
  case NBD_ESHUTDOWN: return "ESHUTDOWN";
  default: return "unknown error";
  }
}

/* "Error values": the client SHOULD treat an unexpected value as
 * NBD_EINVAL. Numbers happen to match Linux errno, but we never rely on
 * that. */
int
nbdc_errno_from_nbd (uint32_t err)
{
  switch (err) {
  case NBD_SUCCESS: return 0;
  case NBD_EPERM: return EPERM;
  case NBD_EIO: return EIO;
  case NBD_ENOMEM: return ENOMEM;
  case NBD_EINVAL: return EINVAL;
  case NBD_ENOSPC: return ENOSPC;
  case NBD_EOVERFLOW: return EOVERFLOW;
  case NBD_ENOTSUP: return ENOTSUP;
  case NBD_ESHUTDOWN: return ESHUTDOWN;
  default: return EINVAL;
  }
}

/* The server side's mapping: EDQUOT and EFBIG count as ENOSPC ("Error
 * values"), EROFS as EPERM; anything unlisted becomes EIO. */
uint32_t
nbdc_nbd_from_errno (int err)
{
  switch (err) {
  case 0: return NBD_SUCCESS;
  case EPERM: case EROFS: return NBD_EPERM;
  case EIO: return NBD_EIO;
  case ENOMEM: return NBD_ENOMEM;
  case EINVAL: return NBD_EINVAL;
  case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
  case EOVERFLOW: return NBD_EOVERFLOW;
  case ENOTSUP: return NBD_ENOTSUP;
  case ESHUTDOWN: return NBD_ESHUTDOWN;
  default: return NBD_EIO;
  }
}

char *
nbdc_eflags_to_string (uint16_t eflags)
{
  static const struct { uint16_t bit; const char *word; } words[] = {
    { NBD_FLAG_HAS_FLAGS, NULL },
    { NBD_FLAG_READ_ONLY, "read-only" },
    { NBD_FLAG_SEND_FLUSH, "flush" },
    { NBD_FLAG_SEND_FUA, "fua" },
    { NBD_FLAG_ROTATIONAL, "rotational" },
    { NBD_FLAG_SEND_TRIM, "trim" },
    { NBD_FLAG_SEND_WRITE_ZEROES, "write-zeroes" },
    { NBD_FLAG_SEND_DF, "df" },
    { NBD_FLAG_CAN_MULTI_CONN, "multi-conn" },
    { NBD_FLAG_SEND_RESIZE, "resize" },
    { NBD_FLAG_SEND_CACHE, "cache" },
    { NBD_FLAG_SEND_FAST_ZERO, "fast-zero" },
    { NBD_FLAG_BLOCK_STATUS_PAYLOAD, "block-status-payload" },
  };
  GString *s = g_string_new (NULL);
  uint16_t known = 0;
  for (size_t i = 0; i < G_N_ELEMENTS (words); i++) {
    known |= words[i].bit;
    if ((eflags & words[i].bit) && words[i].word) {
      if (s->len)
        g_string_append (s, ", ");
      g_string_append (s, words[i].word);
    }
  }
  if (eflags & ~known)
    g_string_append_printf (s, "%sunknown 0x%x", s->len ? ", " : "",
                            (unsigned) (eflags & ~known));
  if (s->len == 0)
    g_string_append (s, "none");
  return g_string_free (s, FALSE);
}

char *
nbdc_escape_text (const char *s, size_t len, size_t max)
{
  GString *out = g_string_sized_new (MIN (len, max) + 8);
  size_t n = MIN (len, max);
  size_t i = 0;
  if (s == NULL)
    n = 0;
  while (i < n) {
    unsigned char c = (unsigned char) s[i];
    if (c >= 0x80) {
      /* Keep a whole valid UTF-8 sequence (that is not a C1 control);
       * escape the bytes of anything else one at a time. */
      const char *end;
      size_t seq = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
      if (seq > 1 && i + seq <= n
          && g_utf8_validate (s + i, seq, &end)) {
        gunichar u = g_utf8_get_char (s + i);
        if (g_unichar_isprint (u)) {
          g_string_append_len (out, s + i, seq);
          i += seq;
          continue;
        }
      }
      g_string_append_printf (out, "\\x%02x", c);
      i++;
      continue;
    }
    if (c == '\\')
      g_string_append (out, "\\\\");
    else if (c == '\n')
      g_string_append (out, "\\n");
    else if (c == '\t')
      g_string_append (out, "\\t");
    else if (c < 0x20 || c == 0x7f)
      g_string_append_printf (out, "\\x%02x", c);
    else
      g_string_append_c (out, c);
    i++;
  }
  if (len > max)
    g_string_append (out, "...");
  return g_string_free (out, FALSE);
}
