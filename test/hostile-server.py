#!/usr/bin/env python3
"""A scripted hostile NBD server for test-hostile.sh.

    hostile-server.py SOCKET SCENARIO [PIDFILE]

Listens on a Unix socket, serves ONE client: a real fixed-newstyle
handshake (structured replies and base:allocation offered unless the
scenario says otherwise), then answers requests correctly except the first
NBD_CMD_READ (or BLOCK_STATUS), which gets the scenario's misbehaviour.
Exits when the client goes away, except close-on-read: it closes every
connection at its first read and accepts the next one, forever (a request
that "kills" the server each time it is retried).

Scenarios about the client's own conduct:
  early-write-reply  answers the first WRITE as soon as its header is in,
                     then reads nothing more (the client must not block
                     forever, and the write must fail)
  read-never         never answers the first READ, answers all others
  die-at-flush       first connection: acknowledges WRITEs into a volatile
                     cache, closes at the first FLUSH (a crash: the cache is
                     lost); later connections behave (accepted forever)
  weaker-reconnect   first connection: minimum block 512, closes at the
                     first READ; later ones: minimum block 4096
  close-every-read   every connection closes at its first READ (BLOCK_STATUS
                     and the rest answered properly), the next is accepted
                     at once, forever: only the read is poisoned

Every request the client sends is checked against the spec and what was
negotiated (magic, command and flags advertised, offset + length inside
the export, alignment to the minimum block, length within the maximum
payload, FLUSH/DISC with zero offset and length, cookies not reused while
in flight). A violation prints "hostile-server: VIOLATION: ..." on stderr
and exits with status 3: the test fails loudly.
"""
import os
import select
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
SIMPLE = 0x67446698
STRUCT = 0x668E33EF
REQ = 0x25609513

OPT_EXPORT_NAME, OPT_ABORT, OPT_GO, OPT_SR, OPT_SET_META = 1, 2, 7, 8, 10
REP_ACK, REP_INFO, REP_META = 1, 3, 4
REP_ERR_UNSUP = 0x80000001
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_BS = 0, 1, 2, 3, 7
T_NONE, T_DATA, T_HOLE, T_BS, T_ERROR, T_ERROR_OFFSET = 0, 1, 2, 5, 0x8001, 0x8002
DONE = 1
SIZE = 1 << 20
CTX_ID = 42

SCENARIOS = {
    "bad-magic", "unknown-cookie", "stale-cookie", "outside-range",
    "too-long", "short", "overlap", "no-done-eof", "huge-error",
    "silence", "endless", "simple-read-sr", "sr-not-negotiated",
    "bad-context", "hole-zero-length", "error-zero", "bad-type",
    "eof-mid-data", "ok", "close-on-read",
    "early-write-reply", "read-never", "die-at-flush", "weaker-reconnect",
    "close-every-read",
}
# Scenarios that accept one connection after another (forever).
MULTI = {"close-on-read", "die-at-flush", "weaker-reconnect",
         "close-every-read"}
INFO_EXPORT, INFO_BLOCK_SIZE = 0, 3
MAX_PAYLOAD = 1 << 20
CMD_NAMES = {0: "READ", 1: "WRITE", 2: "DISC", 3: "FLUSH", 4: "TRIM",
             5: "CACHE", 6: "WRITE_ZEROES", 7: "BLOCK_STATUS"}
F_FUA, F_NO_HOLE, F_DF, F_REQ_ONE, F_FAST_ZERO = 1, 2, 4, 8, 16


def violation(msg):
    sys.stderr.write("hostile-server: VIOLATION: %s\n" % msg)
    sys.stderr.flush()
    os._exit(3)


class Conn:
    """What was negotiated on one connection."""
    def __init__(self, number):
        self.number = number
        self.sr = False
        self.meta = False
        self.min_block = 512
        self.eflags = 1 | 4     # HAS_FLAGS | SEND_FLUSH
        self.in_flight = set()  # cookies not answered yet


def check_request(conn, magic, flags, typ, cookie, off, count):
    """Every request against the spec and what was negotiated."""
    name = CMD_NAMES.get(typ, "command %d" % typ)
    where = "%s offset %d length %d" % (name, off, count)
    if magic != REQ:
        violation("bad request magic 0x%08x" % magic)
    allowed = {CMD_READ: 0, CMD_WRITE: 0, CMD_DISC: 0}
    if conn.eflags & 4:
        allowed[CMD_FLUSH] = 0
    if conn.sr and conn.meta:
        allowed[CMD_BS] = F_REQ_ONE
    if typ not in allowed:
        violation("%s was not negotiated" % where)
    if flags & ~allowed[typ]:
        violation("%s with flags 0x%x (allowed 0x%x)"
                  % (where, flags, allowed[typ]))
    if typ in (CMD_FLUSH, CMD_DISC):
        if off or count:
            violation("%s: offset and length must be 0" % where)
        return
    if count == 0:
        violation("%s: zero length" % where)
    if off + count > SIZE:
        violation("%s: past the end of the export (%d)" % (where, SIZE))
    if off % conn.min_block or count % conn.min_block:
        violation("%s: not aligned to the minimum block %d"
                  % (where, conn.min_block))
    if typ in (CMD_READ, CMD_WRITE) and count > MAX_PAYLOAD:
        violation("%s: over the maximum payload %d" % (where, MAX_PAYLOAD))
    if cookie in conn.in_flight:
        violation("%s: cookie 0x%x still in flight" % (where, cookie))


def recv_all(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b


def opt_reply(s, opt, rep, data=b""):
    s.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, rep, len(data)) + data)


def handshake(s, scenario, conn):
    s.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, 3))  # FIXED | NO_ZEROES
    recv_all(s, 4)
    sr = False
    offer_sr = scenario != "sr-not-negotiated"
    if scenario == "weaker-reconnect" and conn.number > 1:
        conn.min_block = 4096
    while True:
        magic, opt, ln = struct.unpack(">QII", recv_all(s, 16))
        data = recv_all(s, ln)
        if opt == OPT_SR and offer_sr:
            sr = True
            opt_reply(s, opt, REP_ACK)
        elif opt == OPT_SET_META and sr:
            name = b"base:allocation"
            opt_reply(s, opt, REP_META, struct.pack(">I", CTX_ID) + name)
            opt_reply(s, opt, REP_ACK)
            conn.meta = True
        elif opt == OPT_GO:
            # HAS_FLAGS | SEND_FLUSH; block sizes always (a server MAY send
            # them unasked; the client asks anyway).
            opt_reply(s, opt, REP_INFO,
                      struct.pack(">HIII", INFO_BLOCK_SIZE, conn.min_block,
                                  4096, MAX_PAYLOAD))
            opt_reply(s, opt, REP_INFO,
                      struct.pack(">HQH", INFO_EXPORT, SIZE, conn.eflags))
            opt_reply(s, opt, REP_ACK)
            conn.sr = sr
            return sr
        elif opt == OPT_ABORT:
            raise EOFError
        else:
            opt_reply(s, opt, REP_ERR_UNSUP)


def chunk(s, flags, typ, cookie, payload=b"", length=None):
    if length is None:
        length = len(payload)
    s.sendall(struct.pack(">IHHQI", STRUCT, flags, typ, cookie, length) + payload)


def simple(s, cookie, err=0, data=b""):
    s.sendall(struct.pack(">IIQ", SIMPLE, err, cookie) + data)


def good_reply(s, sr, typ, cookie, off, count, store):
    if typ == CMD_READ:
        data = bytes(store[off:off + count])
        if sr:
            chunk(s, DONE, T_DATA, cookie, struct.pack(">Q", off) + data)
        else:
            simple(s, cookie, 0, data)
    elif typ == CMD_BS and sr:
        chunk(s, DONE, T_BS, cookie, struct.pack(">III", CTX_ID, count, 0))
    else:
        simple(s, cookie)


def misbehave(s, sr, scenario, typ, cookie, off, count, prev_cookie):
    data = b"\xab" * count
    if scenario == "bad-magic":
        s.sendall(struct.pack(">IIQ", 0xDEADBEEF, 0, cookie))
    elif scenario == "unknown-cookie":
        chunk(s, DONE, T_DATA, cookie ^ 0x5A5A0000, struct.pack(">Q", off) + data)
    elif scenario == "stale-cookie":
        # The cookie of the earlier (completed) request in the same slot.
        chunk(s, DONE, T_DATA, prev_cookie, struct.pack(">Q", off) + data)
    elif scenario == "outside-range":
        chunk(s, DONE, T_DATA, cookie, struct.pack(">Q", off + 512) + data)
    elif scenario == "too-long":
        chunk(s, DONE, T_DATA, cookie, struct.pack(">Q", off) + data + b"!" * 100)
    elif scenario == "short":
        chunk(s, 0, T_DATA, cookie, struct.pack(">Q", off) + data[: count // 2])
        chunk(s, DONE, T_NONE, cookie)
    elif scenario == "overlap":
        chunk(s, 0, T_DATA, cookie, struct.pack(">Q", off) + data[: count // 2])
        chunk(s, DONE, T_HOLE, cookie, struct.pack(">QI", off + count // 4, count // 2))
    elif scenario == "no-done-eof":
        chunk(s, 0, T_DATA, cookie, struct.pack(">Q", off) + data)
        return "close"
    elif scenario == "eof-mid-data":
        s.sendall(struct.pack(">IHHQI", STRUCT, DONE, T_DATA, cookie, 8 + count)
                  + struct.pack(">Q", off) + data[:10])
        return "close"
    elif scenario == "huge-error":
        chunk(s, DONE, T_ERROR, cookie, struct.pack(">IH", 5, 65000), 6 + 65000)
    elif scenario == "error-zero":
        chunk(s, DONE, T_ERROR, cookie, struct.pack(">IH", 0, 0))
    elif scenario == "silence":
        return "silence"
    elif scenario == "endless":
        # Valid-looking error chunks, forever, never DONE.
        try:
            while True:
                chunk(s, 0, T_ERROR_OFFSET, cookie,
                      struct.pack(">IH", 5, 0) + struct.pack(">Q", off))
        except OSError:
            return "close"
    elif scenario in ("simple-read-sr", "sr-not-negotiated"):
        if scenario == "simple-read-sr":
            simple(s, cookie, 0, data)
        else:
            chunk(s, DONE, T_DATA, cookie, struct.pack(">Q", off) + data)
    elif scenario == "bad-context":
        chunk(s, DONE, T_BS, cookie, struct.pack(">III", CTX_ID + 1, count, 0))
    elif scenario == "hole-zero-length":
        chunk(s, DONE, T_HOLE, cookie, struct.pack(">QI", off, 0))
    elif scenario == "bad-type":
        chunk(s, DONE, 77, cookie, b"xxxx")
    elif scenario == "close-on-read":
        return "close"
    return None


def main():
    path, scenario = sys.argv[1], sys.argv[2]
    if scenario not in SCENARIOS | EXT_SCENARIOS:
        sys.exit("unknown scenario " + scenario)
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(1)
    if len(sys.argv) > 3:
        with open(sys.argv[3], "w") as f:
            f.write(str(os.getpid()))
    store = bytearray(SIZE)     # what the server keeps across connections
    number = 0
    while True:
        s, _ = ls.accept()
        if scenario not in MULTI:
            ls.close()
        number += 1
        if scenario in EXT_SCENARIOS:
            serve_ext(s, scenario)
        else:
            serve(s, scenario, store, Conn(number))
        if scenario not in MULTI:
            break


def serve(s, scenario, store, conn):
    done_bad = False
    prev_cookie = None
    # die-at-flush, first connection: acknowledged writes stay here until
    # a FLUSH, which never comes true (the "crash" drops them).
    volatile = scenario == "die-at-flush" and conn.number == 1
    try:
        sr = handshake(s, scenario, conn)
        while True:
            magic, flags, typ, cookie, off, count = struct.unpack(
                ">IHHQQI", recv_all(s, 28))
            check_request(conn, magic, flags, typ, cookie, off, count)
            if typ == CMD_WRITE and scenario == "early-write-reply":
                # Answer before reading the payload, then read nothing.
                simple(s, cookie)
                p = select.poll()
                p.register(s, select.POLLRDHUP)
                for _ in range(600):     # until the client hangs up, <= 60 s
                    if p.poll(100):
                        break
                break
            if typ == CMD_WRITE:
                data = recv_all(s, count)
                if not volatile:
                    store[off:off + count] = data
            if typ == CMD_DISC:
                break
            if typ == CMD_FLUSH and volatile:
                break
            if typ == CMD_READ and scenario == "weaker-reconnect" \
                    and conn.number == 1:
                break
            if typ == CMD_READ and scenario == "close-every-read":
                break
            if typ == CMD_READ and scenario == "read-never" and not done_bad:
                done_bad = True
                conn.in_flight.add(cookie)
                continue
            # stale-cookie: the first read is answered properly; the
            # second (same slot, new generation) gets the old cookie.
            bad = (not done_bad and typ in (CMD_READ, CMD_BS)
                   and scenario not in ("ok", "read-never", "die-at-flush",
                                        "weaker-reconnect",
                                        "early-write-reply",
                                        "close-every-read")
                   and not (scenario == "stale-cookie" and prev_cookie is None))
            if not bad:
                if typ == CMD_READ:
                    prev_cookie = cookie
                good_reply(s, sr, typ, cookie, off, count, store)
                continue
            done_bad = True
            what = misbehave(s, sr, scenario, typ, cookie, off, count, prev_cookie)
            if what == "close":
                break
            if what == "silence":
                # Keep the socket open; the client must time out.
                s.settimeout(30)
                try:
                    while s.recv(4096):
                        pass
                except OSError:
                    pass
                break
    except (EOFError, OSError):
        pass
    s.close()


# ---- extended headers (EXTENDED_HEADERS extension, doc/proto.md on the
# spec's extension-ext-header branch) ----
# Scenarios "ext-*": the handshake acks NBD_OPT_EXTENDED_HEADERS (except
# ext-not-negotiated), requests are read as 32-byte extended requests (a
# WRITE without NBD_CMD_FLAG_PAYLOAD_LEN, or a compact request, ends the
# session: ext-ok would then fail), replies are extended chunks. The first
# READ or BLOCK_STATUS gets the scenario's misbehaviour, as above. Kept
# apart from the compact scenarios so both can change independently.

EXT_REQ = 0x21E41C71
CMD_TRIM, CMD_WRITE_ZEROES = 4, 6
# ext-big-refused: a 6 GiB export whose server refuses any trim, zero or
# block status over 1 GiB with NBD_EOVERFLOW (the spec allows it for
# "oversize" effect lengths), and logs every request's type and length on
# stderr ("hostile-server: request TYPE LENGTH [refused]"). ext-big-ok: the
# same export and log, refusing nothing.
EXT_BIG_SIZE = 6 << 30
EXT_REPLY = 0x6E8A278C
OPT_EXT = 11
T_BS_EXT = 6
FLAG_PAYLOAD_LEN = 1 << 5

EXT_SCENARIOS = {
    "ext-ok", "ext-offset-mismatch", "ext-length-huge",
    "ext-structured-magic", "ext-simple-magic", "ext-bs-32", "ext-bs-count",
    "ext-bs-len", "ext-bs-high-status", "ext-bs-zero-extent",
    "ext-bs-past-end", "ext-not-negotiated", "ext-unknown-cookie",
    "ext-data-outside", "ext-short-header-eof", "ext-big-refused",
    "ext-big-ok",
}


def ext_handshake(s, scenario):
    s.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, 3))
    recv_all(s, 4)
    ext = sr = False
    while True:
        magic, opt, ln = struct.unpack(">QII", recv_all(s, 16))
        recv_all(s, ln)
        if opt == OPT_EXT and scenario != "ext-not-negotiated":
            ext = True
            opt_reply(s, opt, REP_ACK)
        elif opt == OPT_SR and not ext:
            sr = True
            opt_reply(s, opt, REP_ACK)
        elif opt == OPT_SET_META and (ext or sr):
            name = b"base:allocation"
            opt_reply(s, opt, REP_META, struct.pack(">I", CTX_ID) + name)
            opt_reply(s, opt, REP_ACK)
        elif opt == OPT_GO:
            size = EXT_BIG_SIZE if scenario.startswith("ext-big-") else SIZE
            opt_reply(s, opt, REP_INFO, struct.pack(">HQH", 0, size, 1 | 4 | 32 | 64))
            opt_reply(s, opt, REP_ACK)
            return ext
        elif opt == OPT_ABORT:
            raise EOFError
        else:
            opt_reply(s, opt, REP_ERR_UNSUP)


def xchunk(s, flags, typ, cookie, off, payload=b"", length=None):
    if length is None:
        length = len(payload)
    s.sendall(struct.pack(">IHHQQQ", EXT_REPLY, flags, typ, cookie, off, length)
              + payload)


def bs_ext(extents):
    return struct.pack(">II", CTX_ID, len(extents)) + b"".join(
        struct.pack(">QQ", ln, st) for ln, st in extents)


def ext_good(s, typ, cookie, off, count, store):
    if typ == CMD_READ:
        xchunk(s, DONE, T_DATA, cookie, off,
               struct.pack(">Q", off) + bytes(store[off:off + count]))
    elif typ == CMD_BS:
        # Two extents, so the 64-bit descriptors are really walked.
        half = min(count, max(count // 2, 1))
        ext = [(half, 0)] + ([(count - half, 3)] if count > half else [])
        xchunk(s, DONE, T_BS_EXT, cookie, off, bs_ext(ext))
    else:
        xchunk(s, DONE, T_NONE, cookie, off)


def ext_misbehave(s, scenario, typ, cookie, off, count):
    data = b"\xab" * count
    if scenario == "ext-offset-mismatch":
        xchunk(s, DONE, T_DATA, cookie, off + 512, struct.pack(">Q", off) + data)
    elif scenario == "ext-length-huge":
        s.sendall(struct.pack(">IHHQQQ", EXT_REPLY, DONE, T_DATA, cookie, off,
                              1 << 40))
        return "close"
    elif scenario == "ext-structured-magic":
        chunk(s, DONE, T_DATA, cookie, struct.pack(">Q", off) + data)
    elif scenario == "ext-simple-magic":
        simple(s, cookie, 0, data)
    elif scenario == "ext-bs-32":
        xchunk(s, DONE, T_BS, cookie, off, struct.pack(">III", CTX_ID, count, 0))
    elif scenario == "ext-bs-count":
        p = bs_ext([(count, 0)])
        xchunk(s, DONE, T_BS_EXT, cookie, off, p[:4] + struct.pack(">I", 2) + p[8:])
    elif scenario == "ext-bs-len":
        xchunk(s, DONE, T_BS_EXT, cookie, off, bs_ext([(count, 0)]) + b"\0" * 8)
    elif scenario == "ext-bs-high-status":
        xchunk(s, DONE, T_BS_EXT, cookie, off, bs_ext([(count, 1 << 33)]))
    elif scenario == "ext-bs-zero-extent":
        xchunk(s, DONE, T_BS_EXT, cookie, off, bs_ext([(0, 0)]))
    elif scenario == "ext-bs-past-end":
        xchunk(s, DONE, T_BS_EXT, cookie, off, bs_ext([(count, 0), (4096, 0)]))
    elif scenario == "ext-not-negotiated":
        xchunk(s, DONE, T_DATA, cookie, off, struct.pack(">Q", off) + data)
    elif scenario == "ext-unknown-cookie":
        xchunk(s, DONE, T_DATA, cookie ^ 0x5A5A0000, off,
               struct.pack(">Q", off) + data)
    elif scenario == "ext-data-outside":
        xchunk(s, DONE, T_DATA, cookie, off, struct.pack(">Q", off + 8) + data)
    elif scenario == "ext-short-header-eof":
        s.sendall(struct.pack(">IHHQ", EXT_REPLY, DONE, T_DATA, cookie))
        return "close"
    return None


def serve_ext(s, scenario):
    store = bytearray(SIZE)
    done_bad = False
    try:
        ext = ext_handshake(s, scenario)
        while True:
            if ext:
                magic, flags, typ, cookie, off, ln = struct.unpack(
                    ">IHHQQQ", recv_all(s, 32))
                if magic != EXT_REQ:
                    sys.stderr.write("hostile-server: compact request under "
                                     "extended headers\n")
                    break
                if typ == CMD_WRITE and not flags & FLAG_PAYLOAD_LEN:
                    sys.stderr.write("hostile-server: write without "
                                     "NBD_CMD_FLAG_PAYLOAD_LEN\n")
                    break
            else:
                magic, flags, typ, cookie, off, ln = struct.unpack(
                    ">IHHQQI", recv_all(s, 28))
            if typ == CMD_WRITE:
                store[off:off + ln] = recv_all(s, ln)
            if typ == CMD_DISC:
                break
            if scenario.startswith("ext-big-"):
                refuse = (scenario == "ext-big-refused" and ln > 1 << 30
                          and typ in (CMD_TRIM, CMD_WRITE_ZEROES, CMD_BS))
                sys.stderr.write("hostile-server: request %d %d%s\n"
                                 % (typ, ln, " refused" if refuse else ""))
                if refuse:
                    xchunk(s, DONE, T_ERROR, cookie, off, struct.pack(">IH", 75, 0))
                else:
                    ext_good(s, typ, cookie, off, ln, store)
                continue
            bad = (not done_bad and typ in (CMD_READ, CMD_BS)
                   and scenario != "ext-ok")
            if not bad:
                if ext:
                    ext_good(s, typ, cookie, off, ln, store)
                else:
                    good_reply(s, True, typ, cookie, off, ln, store)
                continue
            done_bad = True
            if ext_misbehave(s, scenario, typ, cookie, off, ln) == "close":
                break
    except (EOFError, OSError):
        pass
    s.close()


if __name__ == "__main__":
    main()
