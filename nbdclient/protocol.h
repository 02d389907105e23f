/* nbdfs — NBD wire format: constants and packed structs, no logic.
 *
 * Every name is the spec's: the NBD protocol, doc/proto.md in
 * NetworkBlockDevice/nbd ("Values"). Comments throughout cite it as
 * nbd-proto.md with a section name; nbd-uri.md is doc/uri.md in the same
 * repository.
 * All multi-byte fields are big-endian on the wire; convert with
 * GUINT16_FROM_BE / GUINT32_FROM_BE / GUINT64_FROM_BE and friends.
 *
 * Do not include <linux/nbd.h> anywhere that includes this file: it defines
 * some of the same names (NBD_CMD_READ, struct nbd_request). Only
 * kernelattach/ includes the kernel headers, and it takes plain integers.
 */
#ifndef NBDCLIENT_PROTOCOL_H
#define NBDCLIENT_PROTOCOL_H

#include <stdint.h>

/* Handshake magics ("Handshake" section). */
#define NBD_INIT_PASSWD        UINT64_C(0x4e42444d41474943) /* "NBDMAGIC" */
#define NBD_OLDSTYLE_MAGIC     UINT64_C(0x00420281861253)   /* cliserv_magic */
#define NBD_NEWSTYLE_MAGIC     UINT64_C(0x49484156454F5054) /* "IHAVEOPT" */
#define NBD_OPT_REPLY_MAGIC    UINT64_C(0x3e889045565a9)

/* Transmission magics. */
#define NBD_REQUEST_MAGIC           UINT32_C(0x25609513)
#define NBD_SIMPLE_REPLY_MAGIC      UINT32_C(0x67446698)
#define NBD_STRUCTURED_REPLY_MAGIC  UINT32_C(0x668e33ef)
/* The EXTENDED_HEADERS extension (doc/proto.md on the spec's
 * extension-ext-header branch, "Request message", "Extended reply chunk
 * message"): 32-byte requests and replies once NBD_OPT_EXTENDED_HEADERS
 * was acked. */
#define NBD_EXTENDED_REQUEST_MAGIC  UINT32_C(0x21e41c71)
#define NBD_EXTENDED_REPLY_MAGIC    UINT32_C(0x6e8a278c)

#define NBD_DEFAULT_PORT 10809

/* Handshake flags (server, 16 bits). */
#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)

/* Client flags (32 bits). */
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

/* Transmission flags (16 bits). */
#define NBD_FLAG_HAS_FLAGS            (1u << 0)
#define NBD_FLAG_READ_ONLY            (1u << 1)
#define NBD_FLAG_SEND_FLUSH           (1u << 2)
#define NBD_FLAG_SEND_FUA             (1u << 3)
#define NBD_FLAG_ROTATIONAL           (1u << 4)
#define NBD_FLAG_SEND_TRIM            (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES    (1u << 6)
#define NBD_FLAG_SEND_DF              (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN       (1u << 8)
#define NBD_FLAG_SEND_RESIZE          (1u << 9)
#define NBD_FLAG_SEND_CACHE           (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO       (1u << 11)
#define NBD_FLAG_BLOCK_STATUS_PAYLOAD (1u << 12)

/* Option types. */
#define NBD_OPT_EXPORT_NAME       1
#define NBD_OPT_ABORT             2
#define NBD_OPT_LIST              3
#define NBD_OPT_PEEK_EXPORT       4
#define NBD_OPT_STARTTLS          5
#define NBD_OPT_INFO              6
#define NBD_OPT_GO                7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10
#define NBD_OPT_EXTENDED_HEADERS  11

/* Option reply types. */
#define NBD_REP_ACK           1
#define NBD_REP_SERVER        2
#define NBD_REP_INFO          3
#define NBD_REP_META_CONTEXT  4
#define NBD_REP_FLAG_ERROR    (UINT32_C(1) << 31)
#define NBD_REP_ERR_UNSUP              (NBD_REP_FLAG_ERROR | 1)
#define NBD_REP_ERR_POLICY             (NBD_REP_FLAG_ERROR | 2)
#define NBD_REP_ERR_INVALID            (NBD_REP_FLAG_ERROR | 3)
#define NBD_REP_ERR_PLATFORM           (NBD_REP_FLAG_ERROR | 4)
#define NBD_REP_ERR_TLS_REQD           (NBD_REP_FLAG_ERROR | 5)
#define NBD_REP_ERR_UNKNOWN            (NBD_REP_FLAG_ERROR | 6)
#define NBD_REP_ERR_SHUTDOWN           (NBD_REP_FLAG_ERROR | 7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD    (NBD_REP_FLAG_ERROR | 8)
#define NBD_REP_ERR_TOO_BIG            (NBD_REP_FLAG_ERROR | 9)
#define NBD_REP_ERR_EXT_HEADER_REQD    (NBD_REP_FLAG_ERROR | 10)

/* NBD_REP_INFO types. */
#define NBD_INFO_EXPORT       0
#define NBD_INFO_NAME         1
#define NBD_INFO_DESCRIPTION  2
#define NBD_INFO_BLOCK_SIZE   3

/* Command flags (16 bits). */
#define NBD_CMD_FLAG_FUA         (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE     (1u << 1)
#define NBD_CMD_FLAG_DF          (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE     (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO   (1u << 4)
#define NBD_CMD_FLAG_PAYLOAD_LEN (1u << 5)

/* Request types. */
#define NBD_CMD_READ          0
#define NBD_CMD_WRITE         1
#define NBD_CMD_DISC          2
#define NBD_CMD_FLUSH         3
#define NBD_CMD_TRIM          4
#define NBD_CMD_CACHE         5
#define NBD_CMD_WRITE_ZEROES  6
#define NBD_CMD_BLOCK_STATUS  7
#define NBD_CMD_RESIZE        8

/* Structured reply flags and types. */
#define NBD_REPLY_FLAG_DONE   (1u << 0)
#define NBD_REPLY_TYPE_NONE              0
#define NBD_REPLY_TYPE_OFFSET_DATA       1
#define NBD_REPLY_TYPE_OFFSET_HOLE       2
#define NBD_REPLY_TYPE_BLOCK_STATUS      5
#define NBD_REPLY_TYPE_BLOCK_STATUS_EXT  6
#define NBD_REPLY_TYPE_ERROR_BIT         (1u << 15)
#define NBD_REPLY_TYPE_ERROR             (NBD_REPLY_TYPE_ERROR_BIT | 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET      (NBD_REPLY_TYPE_ERROR_BIT | 2)
#define NBD_REPLY_TYPE_IS_ERR(t)         (((t) & NBD_REPLY_TYPE_ERROR_BIT) != 0)

/* Error values ("Error values"). */
#define NBD_SUCCESS    0
#define NBD_EPERM      1
#define NBD_EIO        5
#define NBD_ENOMEM     12
#define NBD_EINVAL     22
#define NBD_ENOSPC     28
#define NBD_EOVERFLOW  75
#define NBD_ENOTSUP    95
#define NBD_ESHUTDOWN  108

/* base:allocation flags ("base:allocation metadata context"). */
#define NBD_STATE_HOLE  (1u << 0)
#define NBD_STATE_ZERO  (1u << 1)

/* Spec limits. */
#define NBD_MAX_STRING          4096    /* names, descriptions, contexts */
#define NBD_MAX_OPTION_REPLY    (1u << 20) /* our cap on any one option reply */
#define NBD_DEFAULT_MIN_BLOCK   1
#define NBD_DEFAULT_PREF_BLOCK  4096
#define NBD_DEFAULT_MAX_PAYLOAD (32u * 1024 * 1024) /* "Size constraints" */
#define NBD_MAX_ERROR_MESSAGE   4096    /* our cap on error chunk text */

/* ---- Packed wire structs ---- */

/* Oldstyle: after NBD_INIT_PASSWD + NBD_OLDSTYLE_MAGIC. */
struct nbd_old_handshake {
  uint64_t nbdmagic;
  uint64_t version;          /* NBD_OLDSTYLE_MAGIC */
  uint64_t exportsize;
  uint16_t gflags;           /* high 16 bits of the 32-bit flags: zero */
  uint16_t eflags;
  uint8_t  zeroes[124];
} __attribute__((packed));

/* Newstyle: first 18 bytes from the server. */
struct nbd_new_handshake {
  uint64_t nbdmagic;
  uint64_t version;          /* NBD_NEWSTYLE_MAGIC */
  uint16_t gflags;
} __attribute__((packed));

/* Client option header; followed by optlen bytes of data. */
struct nbd_new_option {
  uint64_t version;          /* NBD_NEWSTYLE_MAGIC */
  uint32_t option;
  uint32_t optlen;
} __attribute__((packed));

/* Server option reply header; followed by replylen bytes. */
struct nbd_fixed_new_option_reply {
  uint64_t magic;            /* NBD_OPT_REPLY_MAGIC */
  uint32_t option;
  uint32_t reply;
  uint32_t replylen;
} __attribute__((packed));

/* Reply to NBD_OPT_EXPORT_NAME (no option reply header). */
struct nbd_export_name_reply {
  uint64_t exportsize;
  uint16_t eflags;
  uint8_t  zeroes[124];      /* omitted if NO_ZEROES was negotiated */
} __attribute__((packed));

/* NBD_INFO_EXPORT payload. */
struct nbd_info_export {
  uint16_t info;             /* NBD_INFO_EXPORT */
  uint64_t exportsize;
  uint16_t eflags;
} __attribute__((packed));

/* NBD_INFO_BLOCK_SIZE payload. */
struct nbd_info_block_size {
  uint16_t info;             /* NBD_INFO_BLOCK_SIZE */
  uint32_t minimum;
  uint32_t preferred;
  uint32_t maximum;
} __attribute__((packed));

/* Transmission request header (compact form). */
struct nbd_request {
  uint32_t magic;            /* NBD_REQUEST_MAGIC */
  uint16_t flags;
  uint16_t type;
  uint64_t cookie;
  uint64_t offset;
  uint32_t count;
} __attribute__((packed));

/* Transmission request header with extended headers: a 64-bit length,
 * the payload length if flags has NBD_CMD_FLAG_PAYLOAD_LEN (WRITE), else
 * the effect length. */
struct nbd_extended_request {
  uint32_t magic;            /* NBD_EXTENDED_REQUEST_MAGIC */
  uint16_t flags;
  uint16_t type;
  uint64_t cookie;
  uint64_t offset;
  uint64_t length;
} __attribute__((packed));

struct nbd_simple_reply {
  uint32_t magic;            /* NBD_SIMPLE_REPLY_MAGIC */
  uint32_t error;
  uint64_t cookie;
} __attribute__((packed));

struct nbd_structured_reply {
  uint32_t magic;            /* NBD_STRUCTURED_REPLY_MAGIC */
  uint16_t flags;
  uint16_t type;
  uint64_t cookie;
  uint32_t length;
} __attribute__((packed));

/* Every reply once extended headers are negotiated: offset echoes the
 * request's ("MUST match the request"); length is the payload length. */
struct nbd_extended_reply {
  uint32_t magic;            /* NBD_EXTENDED_REPLY_MAGIC */
  uint16_t flags;
  uint16_t type;
  uint64_t cookie;
  uint64_t offset;
  uint64_t length;
} __attribute__((packed));

struct nbd_structured_reply_offset_data {
  uint64_t offset;           /* followed by data */
} __attribute__((packed));

struct nbd_structured_reply_offset_hole {
  uint64_t offset;
  uint32_t length;
} __attribute__((packed));

struct nbd_structured_reply_block_status_hdr {
  uint32_t context_id;       /* followed by descriptors */
} __attribute__((packed));

struct nbd_block_descriptor {
  uint32_t length;
  uint32_t status_flags;
} __attribute__((packed));

/* NBD_REPLY_TYPE_BLOCK_STATUS_EXT: length == 8 + count * 16. */
struct nbd_structured_reply_block_status_ext_hdr {
  uint32_t context_id;
  uint32_t count;            /* descriptors that follow, nonzero */
} __attribute__((packed));

struct nbd_block_descriptor_ext {
  uint64_t length;
  uint64_t status_flags;
} __attribute__((packed));

struct nbd_structured_reply_error {
  uint32_t error;
  uint16_t len;              /* followed by len bytes of message */
} __attribute__((packed));
/* NBD_REPLY_TYPE_ERROR_OFFSET: the error header, the message, then a
 * 64-bit offset. */

#endif /* NBDCLIENT_PROTOCOL_H */
