#!/usr/bin/env python3
"""One mount-time sample for scripts/bench.sh.

  bench-mount-time.py RESULT PIDFILE LOG FILE SIZE MNT CMD...

Starts CMD (a FUSE client that stays in the foreground and mounts the
export as FILE below MNT), times from just before it starts until a stat
of FILE gives SIZE bytes, polling every millisecond, then unmounts MNT and
waits for the client to end. Writes RESULT as {"seconds": S, "bytes": 0}
or {"error": "..."}. The client's PID is in PIDFILE while it runs, so the
bench's cleanup can end it if this is interrupted.
"""
import json
import os
import subprocess
import sys
import time


def unmount(mnt):
    if not os.path.ismount(mnt):
        return
    if subprocess.run(["fusermount3", "-u", mnt],
                      stderr=subprocess.DEVNULL).returncode != 0:
        time.sleep(1)
        subprocess.run(["fusermount3", "-uz", mnt], stderr=subprocess.DEVNULL)


def main():
    res, pidfile, log, path, size, mnt = sys.argv[1:7]
    cmd = sys.argv[7:]
    size = int(size)
    result = None
    with open(log, "w") as logf:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                             stderr=subprocess.STDOUT)
        with open(pidfile, "w") as f:
            f.write("%d\n" % p.pid)
        deadline = t0 + 30
        while True:
            try:
                if os.stat(path).st_size == size:
                    result = {"seconds": round(time.monotonic() - t0, 6),
                              "bytes": 0}
                    break
            except OSError:   # not mounted yet: the bare directory
                pass
            if p.poll() is not None:
                result = {"error": "the client exited with status %d before "
                          "its file was usable" % p.returncode}
                break
            if time.monotonic() > deadline:
                result = {"error": "the file was not usable after 30 s"}
                break
            time.sleep(0.001)
        unmount(mnt)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        os.unlink(pidfile)
    if "error" in result:
        with open(log) as f:
            lines = f.read().strip().splitlines()
        if lines:
            result["error"] += ": " + lines[-1]
    with open(res, "w") as f:
        json.dump(result, f)
        f.write("\n")


if __name__ == "__main__":
    main()
