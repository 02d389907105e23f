#!/usr/bin/env python3
"""Writes the seed corpora for the libFuzzer targets in test/fuzz/:
valid exchanges (and a few classic broken ones) so the fuzzer starts deep.

    python3 test/fuzz/gen-corpus.py test/fuzz/corpus

Creates DIR/address, DIR/negotiate, DIR/conn, DIR/conn-ext and DIR/pool
(seed-* files; regression inputs found by fuzzing live beside them as
crash-*/regress-* files). The wire formats follow nbd-proto.md (conn-ext:
the spec's extension-ext-header branch); the request tables of the conn
and conn-ext targets must match `reqs[]` in fuzz-conn.c / fuzz-conn-ext.c.
"""
import os
import struct
import sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "corpus")

def write(kind, name, data):
    d = os.path.join(out, kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)

# ---- address ----
addresses = [
    "localhost", "localhost:disk", "[::1]", "[::1]:disk", "/tmp/sock",
    "/tmp/sock:disk", "./sock", "nbd://example.com", "nbd://example.com:10810/disk",
    "nbds://example.com/disk?tls-verify-peer=false", "nbd://h//disk",
    "nbd+unix:///disk?socket=/tmp/sock", "nbds+unix:///?socket=/tmp/s&tls-type=psk&tls-psk-file=/k",
    "nbd://user@[fe80::1%25eth0]:10809/a%20b?tls-hostname=x&x-foo=1",
    "nbds://h/e?tls-certificates=/etc/pki&tls-username=u&tls-type=x509",
    "nbd+unix:///e?socket=%00abstract", "nbd://h:99999/", "host:port:export",
    "nbd://[::1/x", "nbd://h/%4", "nbd+vsock:///e",
]
for i, a in enumerate(addresses):
    write("address", "%02d" % i, a.encode())

# ---- negotiate: byte 0 = mode (see fuzz-negotiate.c), then server bytes ----
NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = b"IHAVEOPT"
REPLY_MAGIC = 0x3e889045565a9
OLD_MAGIC = 0x00420281861253
OPT = dict(export_name=1, abort=2, list=3, starttls=5, info=6, go=7,
           structured=8, list_meta=9, set_meta=10, ext=11)
ACK, SERVER, INFO, META = 1, 2, 3, 4
ERR = 1 << 31
ERR_UNSUP, ERR_POLICY, ERR_UNKNOWN, ERR_TLS_REQD = ERR | 1, ERR | 2, ERR | 6, ERR | 5
EFLAGS = 0x1 | 0x4 | 0x8 | 0x20 | 0x40 | 0x100 | 0x400  # has flags, flush, fua, trim, zeroes, multi, cache
SIZE = 1 << 20

def greeting(gflags=3):
    return NBDMAGIC + IHAVEOPT + struct.pack(">H", gflags)

def rep(opt, typ, data=b""):
    return struct.pack(">QIII", REPLY_MAGIC, OPT[opt], typ, len(data)) + data

# A server without extended headers: nbdfs asks for them first.
NOEXT = rep("ext", ERR_UNSUP)

def info_export(size=SIZE, flags=EFLAGS):
    return struct.pack(">HQH", 0, size, flags)

def info_block(mn=512, pref=4096, mx=1 << 25):
    return struct.pack(">HIII", 3, mn, pref, mx)

def info_name(n):
    return struct.pack(">H", 1) + n

def info_desc(d):
    return struct.pack(">H", 2) + d

def meta(ctx_id, name=b"base:allocation", opt="set_meta"):
    return rep(opt, META, struct.pack(">I", ctx_id) + name)

def go_ok(opt="go", size=SIZE, flags=EFLAGS, extra=True):
    s = rep(opt, INFO, info_export(size, flags))
    if extra:
        s += rep(opt, INFO, info_block())
        s += rep(opt, INFO, info_name(b"disk"))
        s += rep(opt, INFO, info_desc(b"a test disk \xe2\x9c\x93"))
    return s + rep(opt, ACK)

def server_entry(name, desc=b""):
    return rep("list", SERVER, struct.pack(">I", len(name)) + name + desc)

full = (greeting() + NOEXT + rep("structured", ACK) + meta(7) + rep("set_meta", ACK)
        + go_ok())
seeds = {
    # nbdc_negotiate
    "full": b"\x00" + full,
    "full-disk": b"\x40" + full,
    "no-structured": b"\x04" + greeting() + go_ok(),
    "no-meta": b"\x08" + greeting() + NOEXT + rep("structured", ACK) + go_ok(),
    "structured-unsup": b"\x00" + greeting() + NOEXT + rep("structured", ERR_UNSUP)
        + go_ok(),
    "meta-none": b"\x00" + greeting() + NOEXT + rep("structured", ACK)
        + rep("set_meta", ACK) + go_ok(extra=False),
    "go-unsup-export-name": b"\x04" + greeting() + rep("go", ERR_UNSUP)
        + struct.pack(">QH", SIZE, EFLAGS),
    "go-unsup-export-name-zeroes": b"\x04" + greeting(1) + rep("go", ERR_UNSUP)
        + struct.pack(">QH", SIZE, EFLAGS) + bytes(124),
    "go-unknown-list": b"\x44" + greeting()
        + rep("go", ERR_UNKNOWN, b"no such export")
        + server_entry(b"a", b"first") + server_entry(b"b\x1b[31m")
        + rep("list", ACK) + rep("abort", ACK),
    "go-policy": b"\x04" + greeting() + rep("go", ERR_POLICY, b"go away\n")
        + rep("abort", ACK),
    "go-tls-reqd": b"\x04" + greeting() + rep("go", ERR_TLS_REQD)
        + rep("abort", ACK),
    # extended headers acked: no structured reply option, never
    # EXPORT_NAME; refused with --no-extended-headers (bit 7)
    "ext-full": b"\x00" + greeting() + rep("ext", ACK) + meta(7)
        + rep("set_meta", ACK) + go_ok(),
    "ext-go-unsup": b"\x00" + greeting() + rep("ext", ACK) + meta(7)
        + rep("set_meta", ACK) + rep("go", ERR_UNSUP),
    "ext-required": b"\x80" + greeting() + rep("structured", ACK) + meta(7)
        + rep("set_meta", ACK) + rep("go", ERR | 10) + rep("abort", ACK),
    "ext-info": b"\x20" + greeting() + rep("ext", ACK) + go_ok("info")
        + meta(1, opt="list_meta") + rep("list_meta", ACK) + meta(7)
        + rep("set_meta", ACK) + go_ok(),
    "oldstyle": b"\x00" + NBDMAGIC + struct.pack(">QQI", OLD_MAGIC, SIZE, EFLAGS)
        + bytes(124),
    "newstyle": b"\x00" + greeting(2) + struct.pack(">QH", SIZE, EFLAGS),
    "newstyle-zeroes": b"\x40" + greeting(0) + struct.pack(">QH", SIZE, EFLAGS)
        + bytes(124),
    "size-too-big": b"\x04" + greeting() + go_ok(size=1 << 63),
    "bad-block-size": b"\x04" + greeting()
        + rep("go", INFO, info_export()) + rep("go", INFO, info_block(3, 4096, 1 << 20))
        + rep("go", ACK),
    # STARTTLS: ALLOW refused -> clear text; REQUIRE acked -> TLS handshake
    "tls-allow-unsup": b"\x01" + greeting() + rep("starttls", ERR_UNSUP)
        + NOEXT + rep("structured", ACK) + meta(7) + rep("set_meta", ACK) + go_ok(),
    "tls-require-refused": b"\x02" + greeting() + rep("starttls", ERR_POLICY),
    "tls-require-ack": b"\x02" + greeting() + rep("starttls", ACK)
        + bytes.fromhex("160303002a020000260303") + bytes(32),
    "tls-oldstyle": b"\x02" + NBDMAGIC + struct.pack(">QQI", OLD_MAGIC, SIZE, EFLAGS)
        + bytes(124),
    # nbdc_list_exports
    "list": b"\x10" + greeting() + server_entry(b"", b"default")
        + server_entry(b"disk", b"the disk") + server_entry(b"\xff\xfe")
        + rep("list", ACK) + rep("abort", ACK),
    "list-unsup": b"\x10" + greeting() + rep("list", ERR_UNSUP),
    "list-tls-allow": b"\x11" + greeting() + rep("starttls", ERR_UNSUP)
        + server_entry(b"disk") + rep("list", ACK) + rep("abort", ACK),
    "list-oldstyle": b"\x10" + NBDMAGIC + struct.pack(">QQI", OLD_MAGIC, SIZE, EFLAGS)
        + bytes(124),
    # nbdc_query_info
    "info": b"\x20" + greeting() + NOEXT + rep("structured", ACK) + go_ok("info")
        + meta(1, opt="list_meta") + meta(2, b"qemu:dirty-bitmap:b", "list_meta")
        + rep("list_meta", ACK) + meta(7) + rep("set_meta", ACK) + go_ok(),
    "info-disk": b"\x60" + greeting() + NOEXT + rep("structured", ACK) + go_ok("info")
        + rep("list_meta", ACK) + rep("set_meta", ACK) + go_ok(),
    "info-unsup": b"\x24" + greeting() + rep("info", ERR_UNSUP)
        + rep("go", ERR_UNSUP) + struct.pack(">QH", SIZE, EFLAGS),
    "info-unknown": b"\x64" + greeting() + rep("info", ERR_UNKNOWN)
        + server_entry(b"other") + rep("list", ACK) + rep("abort", ACK),
    "info-newstyle": b"\x20" + greeting(2) + struct.pack(">QH", SIZE, EFLAGS),
    "info-oldstyle": b"\x20" + NBDMAGIC + struct.pack(">QQI", OLD_MAGIC, SIZE, EFLAGS)
        + bytes(124),
}
for name, data in seeds.items():
    write("negotiate", name, data)

# ---- conn: byte 0 (bit 0 = simple replies only), then replies ----
SIMPLE, STRUCT = 0x67446698, 0x668e33ef
DONE = 1
T_NONE, T_DATA, T_HOLE, T_BS, T_ERR, T_ERR_OFF = 0, 1, 2, 5, 0x8001, 0x8002
# Must match reqs[] in fuzz-conn.c: (type, offset, count); cookie = 1<<32 | i
REQS = [("read", 0, 4096), ("read", 8192, 512), ("bs", 0, 65536),
        ("write", 4096, 512), ("flush", 0, 0), ("bs1", 4096, 4096),
        ("trim", 0, 4096), ("read", SIZE - 512, 512)]

def cookie(i, gen=1):
    return (gen << 32) | i

def simple(i, err=0, data=b""):
    return struct.pack(">IIQ", SIMPLE, err, cookie(i)) + data

def chunk(i, typ, payload=b"", flags=0):
    return struct.pack(">IHHQI", STRUCT, flags, typ, cookie(i), len(payload)) + payload

def data_chunk(i, off, data, flags=0):
    return chunk(i, T_DATA, struct.pack(">Q", off) + data, flags)

def hole_chunk(i, off, n, flags=0):
    return chunk(i, T_HOLE, struct.pack(">QI", off, n), flags)

def bs_chunk(i, extents, ctx=7, flags=DONE):
    return chunk(i, T_BS, struct.pack(">I", ctx)
                 + b"".join(struct.pack(">II", l, f) for l, f in extents), flags)

def err_chunk(i, err, msg=b"", flags=DONE, off=None):
    if off is None:
        return chunk(i, T_ERR, struct.pack(">IH", err, len(msg)) + msg, flags)
    return chunk(i, T_ERR_OFF, struct.pack(">IH", err, len(msg)) + msg
                 + struct.pack(">Q", off), flags)

def all_ok_structured():
    s = b""
    s += data_chunk(0, 0, b"A" * 2048) + hole_chunk(0, 2048, 2048, DONE)
    s += data_chunk(1, 8192, b"B" * 512, DONE)
    s += bs_chunk(2, [(4096, 0), (61440, 3)])
    s += chunk(3, T_NONE, flags=DONE)
    s += chunk(4, T_NONE, flags=DONE)
    s += bs_chunk(5, [(8192, 3)])
    s += simple(6)
    s += hole_chunk(7, SIZE - 512, 512, DONE)
    return s

conn = {
    "structured-all-ok": b"\x00" + all_ok_structured(),
    "structured-reversed": b"\x00" + hole_chunk(7, SIZE - 512, 512, DONE)
        + simple(6) + bs_chunk(5, [(4096, 0)]) + simple(4) + simple(3)
        + bs_chunk(2, [(65536, 0)]) + data_chunk(1, 8192, b"b" * 512, DONE)
        + hole_chunk(0, 2048, 2048) + data_chunk(0, 0, b"a" * 2048, DONE),
    "structured-interleaved": b"\x00" + data_chunk(0, 1024, b"x" * 3072)
        + data_chunk(1, 8192, b"y" * 256) + hole_chunk(0, 0, 1024)
        + data_chunk(1, 8448, b"z" * 256) + chunk(0, T_NONE, flags=DONE)
        + chunk(1, T_NONE, flags=DONE),
    "structured-errors": b"\x00" + err_chunk(0, 5, b"I/O error at 100", off=100)
        + err_chunk(1, 1, b"EPERM", flags=0) + chunk(1, T_NONE, flags=DONE)
        + err_chunk(2, 95, b"not supported") + simple(3, 28)
        + err_chunk(4, 12) + err_chunk(5, 22, b"\x1b]0;title\x07")
        + err_chunk(6, 0x9999) + chunk(7, 0x8003, struct.pack(">IH", 5, 0), DONE),
    "structured-bad-chunk": b"\x00" + chunk(0, 3, b"xyz", DONE),
    "structured-overlap": b"\x00" + data_chunk(0, 0, b"a" * 2048)
        + hole_chunk(0, 1024, 3072, DONE),
    "structured-short": b"\x00" + data_chunk(0, 0, b"a" * 4000, DONE),
    "structured-stale": b"\x00" + data_chunk(1, 8192, b"B" * 512, DONE)
        + data_chunk(1, 8192, b"B" * 512, DONE),
    "structured-truncated": b"\x00" + all_ok_structured()[:300],
    "simple-all-ok": b"\x01" + simple(0, 0, b"A" * 4096) + simple(1, 0, b"B" * 512)
        + simple(2, 95) + simple(3) + simple(4) + simple(5, 95) + simple(6)
        + simple(7, 0, b"C" * 512),
    "simple-errors": b"\x01" + simple(0, 5) + simple(1, 1) + simple(3, 28)
        + simple(4, 12) + simple(6, 22) + simple(7, 108) + simple(2, 0)
        + simple(5, 0x7777),
}
for name, data in conn.items():
    write("conn", name, data)
# ---- conn-ext: byte 0 (bit 0 = no base:allocation), then extended
# replies (EXTENDED_HEADERS extension) ----
EXT_REPLY = 0x6e8a278c
T_BS_EXT = 6
GIB = 1 << 30
SIZE_EXT = 16 * GIB
# Must match reqs[] in fuzz-conn-ext.c: (offset, count); cookie = 1<<32 | i
REQS_EXT = [(0, 4096), (0, 8 * GIB), (4096, 512), (GIB, 6 * GIB),
            (4096, 4096), (0, 6 * GIB), (SIZE_EXT - 512, 512), (0, 0)]

def xchunk(i, typ, payload=b"", flags=0, off=None, length=None):
    if off is None:
        off = REQS_EXT[i][0]
    if length is None:
        length = len(payload)
    return struct.pack(">IHHQQQ", EXT_REPLY, flags, typ, cookie(i), off,
                       length) + payload

def xdata(i, off, data, flags=0):
    return xchunk(i, T_DATA, struct.pack(">Q", off) + data, flags)

def xhole(i, off, n, flags=0):
    return xchunk(i, T_HOLE, struct.pack(">QI", off, n), flags)

def xbs(i, extents, ctx=7, flags=DONE, count=None):
    if count is None:
        count = len(extents)
    return xchunk(i, T_BS_EXT, struct.pack(">II", ctx, count)
                  + b"".join(struct.pack(">QQ", l, f) for l, f in extents), flags)

def xerr(i, err, msg=b"", flags=DONE):
    return xchunk(i, T_ERR, struct.pack(">IH", err, len(msg)) + msg, flags)

def all_ok_ext():
    s = b""
    s += xdata(0, 0, b"A" * 2048) + xhole(0, 2048, 2048, DONE)
    s += xbs(1, [(5 * GIB, 3), (3 * GIB, 0)])
    s += xchunk(2, T_NONE, flags=DONE)
    s += xchunk(3, T_NONE, flags=DONE)
    s += xbs(4, [(4096, 0)])
    s += xchunk(5, T_NONE, flags=DONE)
    s += xhole(6, SIZE_EXT - 512, 512, DONE)
    s += xchunk(7, T_NONE, flags=DONE)
    return s

conn_ext = {
    "ext-all-ok": b"\x00" + all_ok_ext(),
    "ext-no-meta": b"\x01" + all_ok_ext(),
    "ext-errors": b"\x00" + xerr(0, 5, b"I/O error") + xerr(1, 22)
        + xerr(2, 28, b"full") + xerr(3, 75, flags=0) + xchunk(3, T_NONE, flags=DONE)
        + xerr(4, 95) + xerr(5, 95) + xerr(6, 1) + xerr(7, 5),
    "ext-bad-offset": b"\x00" + xchunk(0, T_DATA, struct.pack(">Q", 0)
        + b"a" * 4096, DONE, off=512),
    "ext-bs-count": b"\x00" + xbs(1, [(8 * GIB, 0)], count=2),
    "ext-bs-high": b"\x00" + xbs(1, [(8 * GIB, 1 << 40)]),
    "ext-bs-32": b"\x00" + xchunk(1, T_BS, struct.pack(">III", 7, 4096, 0), DONE),
    "ext-structured": b"\x00" + chunk(0, T_NONE, flags=DONE),
    "ext-simple": b"\x00" + simple(7),
    "ext-huge-length": b"\x00" + xchunk(0, T_DATA, flags=DONE, length=1 << 33),
    "ext-truncated": b"\x00" + all_ok_ext()[:200],
}
for name, data in conn_ext.items():
    write("conn-ext", name, data)
# ---- pool: byte 0 = mode, 4 bytes size, [3 bytes block sizes], then one
# decision byte per request (0x00-0x9f correct, 0xa0 error, 0xc0 wrong
# cookie, 0xd0 shifted content, 0xe0 garbage + EOF, 0xf0 hang up) ----
def size32(n):
    return struct.pack(">I", n)

pool = {
    "structured": b"\x00" + size32(65536),
    "simple": b"\x01" + size32(65536),
    "no-meta": b"\x02" + size32(65536),
    "fua-zeroes": b"\x0c" + size32(100000),
    "bs-512": b"\x1c" + size32(65536) + bytes([9, 2, 5]),
    "bs-4096": b"\x1c" + size32(200704) + bytes([12, 0, 3]),
    "bs-8192-simple": b"\x11" + size32(65536) + bytes([13, 1, 0]),
    "bs-max-from-input": b"\x30" + size32(65536) + bytes([0, 0]) + size32(4096),
    "errors": b"\x1c" + size32(65536) + bytes([9, 0, 8]) + bytes([0x10, 0xa1, 5, 0xb4, 0x00, 0xa2, 0xb3] * 4),
    "small-export": b"\x10" + size32(3000) + bytes([10, 0, 0]),
    "hang-up": b"\x00" + size32(65536) + bytes([0x00, 0x00, 0xf0]),
}
for name, data in pool.items():
    write("pool", name, data)
print("wrote seeds under", out)
