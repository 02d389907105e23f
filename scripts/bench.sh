#!/usr/bin/env bash
# nbdfs benchmark: nbdfs FUSE mode against two nbdfuse versions and a
# no-FUSE ceiling, all against the same nbdkit memory server, interleaved.
#
#   scripts/bench.sh [--quick] [--runs N] [--runtime S] [--size SIZE]
#                    [--transport unix|tcp|both|tls] [--no-tls] [--files N]
#                    [--out DIR] [--tests LIST]
#
# Clients ("columns"), each with CONNS (4) connections to the server:
#   nbdfs      $NBDFS -f -C 4 ADDRESS MNT (FUSE), the export as MNT/disk
#   nbdfuse    this host's nbdfuse (libnbd 1.14 on Debian 12) -C 4 MNT/disk URI
#   nbdfuse13  nbdfuse 1.22 from the Debian 13 tree scripts/check-debian13.sh
#              builds ($NBDFS_DEBIAN13_TREE, default /var/cache/nbdfs/debian13),
#              run on this host through the tree's own dynamic loader and
#              libraries (so its FUSE mount is an ordinary host mount); the
#              column is skipped, with a note, when there is no tree
#   ceiling  no FUSE at all: fio's nbd engine (libnbd; one connection per
#            job, so its rows run 4 jobs sharing the same total queue depth
#            whenever that depth is >= 4), nbdcopy (-C 4) for the dd rows,
#            and a loop device on a RAM file for the real-use row (the host
#            kernel has no nbd.ko, so no NBD block device here)
#
# Sections: Unix socket, TCP loopback, and TLS (unless --no-tls): the same
# server over TCP loopback with --tls=require and X.509 certificates made
# at run time (scripts/make-pki.sh), nbdfs against nbdfuse 1.22 on the
# random and sequential fio rows (nbdfuse 1.14 and fio's nbd engine refuse
# a tls-certificates directory in a URI: n/a there), and a line saying
# whether the kernel's TLS (KTLS) carried any of it.
#
# Targets (nbdfs / nbdfuse, judged against each nbdfuse present; a target
# is met only if met against every one): every row at least 1.0x (time and
# latency rows: at most 1.0x); 1 MiB sequential rows >= 1.2x; random 4 KiB
# qd32 >= 2.5x; buffered read >= 1.5x, buffered write >= 1.2x; real use
# <= 0.85x; mount time <= 1.0x. TLS: random >= 2x, sequential >= 1.2x.
# Mount time: from starting the client (nbdfs in the foreground, -f, like
# nbdfuse) until a stat of its file gives the export size, polled every
# millisecond, then unmounted; a fresh mount per sample.
#
# Honesty: each FUSE mount's readahead (its bdi read_ahead_kb: nbdfs raises
# it, nbdfuse keeps the kernel's default) is recorded and shown, and the row
# dd-read-same-ra repeats dd-read with each nbdfuse's readahead set to
# nbdfs's. At every sample the CPU time of the whole machine (/proc/stat) and
# of the benchmark's own processes (this shell and its descendants, nbdkit)
# is recorded; a verdict is refused when, during any sample of its row, more
# than 25% of the CPU capacity went to anything else (scripts/bench-cpu.py),
# or when any sample of its row failed. (Not the load average: the benchmark
# alone drives it to 3-6 on 2 CPUs. It is still recorded, and a warning
# printed when the machine is not idle at the start.)
#
# For every test, every client runs in turn (the starting client rotates
# between repetitions), repeated --runs times; the table shows medians.
# Output: a markdown table on stdout and in OUT/results.md, every raw
# sample (fio JSON, dd/real-use timings) under OUT/raw/, the aggregate in
# OUT/results.json and a chart in OUT/bench.png (gnuplot).
#
# Needs root (drop_caches, loop devices, mount), fio, nbdkit, nbdfuse,
# nbdcopy, gnuplot, mkfs.ext4, python3, certtool (scripts/install-deps.sh
# installs them). Cleans up after itself: unmounts, detaches loop devices
# and kills what it started, by PID.
set -euo pipefail

SRCDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${NBDFS:=$SRCDIR/nbdfs}"

runs=3 runtime=3 size=1G transport=both files=20000 quick=0 tls=1
out=$SRCDIR/bench-out
tests_sel=
runs_set= runtime_set= size_set= files_set= transport_set=

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  cat <<EOF

Options:
  --quick          smoke run: 1 run, 1 s per fio job, 128M export, 500
                   files, Unix socket (and TLS) only (each can still be
                   overridden)
  --runs N         repetitions of every test per client (default $runs)
  --runtime S      seconds per fio job (default $runtime)
  --size SIZE      export size, also the fio region and the dd length
                   (default $size; suffix K, M or G)
  --transport T    unix, tcp or both (default both, Unix socket first),
                   then the TLS section; tls: the TLS section only
  --no-tls         leave out the TLS section
  --files N        small files in the real-use tree (default $files)
  --tests LIST     comma-separated subset of: $(echo "${ALL_TESTS[*]}" | tr ' ' ,)
  --out DIR        output directory (default bench-out/)
Environment: NBDFS (default ./nbdfs), NBDFS_OPTS (extra nbdfs options),
NBDFUSE_OPTS (extra options for both nbdfuse), NBDFS_DEBIAN13_TREE (the
Debian 13 tree with nbdfuse 1.22, default /var/cache/nbdfs/debian13).
EOF
}

ALL_TESTS=(seq-read-1M-qd1 seq-read-1M-qd16 seq-write-1M-qd1 seq-write-1M-qd16
           rand-read-4k-qd32-j1 rand-read-4k-qd32-j2
           rand-write-4k-qd32-j1 rand-write-4k-qd32-j2
           lat-read-4k-qd1 dd-read dd-read-same-ra dd-write real-use mount-time)
# The TLS section runs these (of those selected).
TLS_TESTS=(rand-read-4k-qd32-j1 rand-read-4k-qd32-j2 rand-write-4k-qd32-j1
           seq-read-1M-qd1 seq-read-1M-qd16 seq-write-1M-qd1 seq-write-1M-qd16)
CONNS=4     # connections per client, passed explicitly to every one
# A verdict is refused when, during any sample of its row, more than this
# share of the machine's CPU capacity (elapsed x CPUs) went to anything but
# the benchmark's own processes (scripts/bench-cpu.py). Kernel threads count
# as "anything else", even the loop workers, writeback and softirq work the
# benchmark causes itself; measured with --quick on the 2-core machine (no
# other work during the sample, largest per sample): fio rows 0-3%, dd rows
# 0-2% (--size 1G, 1.2-2.6 s samples) and 2-4% (128M, padded to 1 s),
# real-use 5-10% (ext4 on loop, --size 1G --files 5000: loop0 kworkers,
# ksoftirqd, ext4-rsv-conversion), mount time 0-1%. Samples during which
# other helpers' fio/perf/nbdkit ran showed 16-66%. 25% leaves 2.5x the
# benchmark's own worst case, and what it lets through (a quarter of the
# CPU elsewhere) is still visible in the table's "other CPU" column.
FOREIGN_MAX_PCT=25

die() { echo "bench: $*" >&2; exit 1; }
need_arg() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --runs) need_arg "$@"; runs=$2; runs_set=1; shift ;;
    --runtime) need_arg "$@"; runtime=$2; runtime_set=1; shift ;;
    --size) need_arg "$@"; size=$2; size_set=1; shift ;;
    --transport) need_arg "$@"; transport=$2; transport_set=1; shift ;;
    --files) need_arg "$@"; files=$2; files_set=1; shift ;;
    --no-tls) tls=0 ;;
    --out) need_arg "$@"; out=$2; shift ;;
    --tests) need_arg "$@"; tests_sel=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then
  [ -n "$runs_set" ] || runs=1
  [ -n "$runtime_set" ] || runtime=1
  [ -n "$size_set" ] || size=128M
  [ -n "$files_set" ] || files=500
  [ -n "$transport_set" ] || transport=unix
fi

[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "--runs takes a number >= 1"
[[ "$runtime" =~ ^[1-9][0-9]*$ ]] || die "--runtime takes whole seconds >= 1"
[[ "$files" =~ ^[1-9][0-9]*$ ]] || die "--files takes a number >= 1"
case "$transport" in
  unix) transports=(unix) ;;
  tcp) transports=(tcp) ;;
  both) transports=(unix tcp) ;;
  tls) transports=() ;;
  *) die "--transport takes unix, tcp, both or tls" ;;
esac
if [ "$tls" = 1 ]; then
  sections=("${transports[@]}" tls)
elif [ "$transport" = tls ]; then
  die "--transport tls and --no-tls leave nothing to run"
else
  sections=("${transports[@]}")
fi
size_bytes=$(numfmt --from=iec "${size^^}" 2>/dev/null) \
  || die "--size '$size': expected a size like 512M or 1G"
size_mib=$(( size_bytes / 1048576 ))
[ "$size_mib" -ge 64 ] && [ $(( size_bytes % 1048576 )) -eq 0 ] \
  || die "--size must be a whole number of MiB, at least 64M"

if [ -n "$tests_sel" ]; then
  IFS=, read -r -a tests <<< "$tests_sel"
  for t in "${tests[@]}"; do
    [[ " ${ALL_TESTS[*]} " == *" $t "* ]] || die "unknown test '$t' (see --help)"
  done
else
  tests=("${ALL_TESTS[@]}")
fi

# --- what the machine must have ---------------------------------------
[ "$(id -u)" = 0 ] || die "run as root (drop_caches, loop devices, mount)"
for c in fio nbdkit nbdfuse nbdcopy gnuplot mkfs.ext4 losetup python3 \
         fusermount3 mountpoint numfmt timeout flock; do
  command -v "$c" >/dev/null || die "missing $c: run scripts/install-deps.sh"
done
[ -c /dev/fuse ] || die "/dev/fuse is missing (modprobe fuse)"
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine"
nbdkit memory --version >/dev/null 2>&1 || die "nbdkit has no memory plugin"
[ -w /proc/sys/vm/drop_caches ] || die "cannot write /proc/sys/vm/drop_caches"
[ -x "$NBDFS" ] || echo "bench: $NBDFS not found: the nbdfs column will be n/a" >&2
if [ "$tls" = 1 ]; then
  command -v certtool >/dev/null || die "missing certtool: run scripts/install-deps.sh"
  nbdkit --dump-config 2>/dev/null | grep -q '^tls=yes' \
    || die "this nbdkit has no TLS support"
fi

# --- bookkeeping and cleanup (by PID, never by name) --------------------
# BENCH_TMPDIR / BENCH_SHMDIR move the scratch directories (the smoke
# test checks its own for leftovers, not a directory others share).
tmp=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/nbdfs-bench.XXXXXX")
shm=$(mktemp -d "${BENCH_SHMDIR:-/dev/shm}/nbdfs-bench.XXXXXX")
pids=() fuse_mnts=() loop_devs=() plain_mnts=() fusectl_mounted=0

kill_pid() {
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for (( i=0; i<100; i++ )); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$? m d p
  set +e
  for m in "${plain_mnts[@]}"; do
    mountpoint -q "$m" && umount "$m"
  done
  for d in "${loop_devs[@]}"; do [ -z "$d" ] || loop_detach "$d"; done
  for m in "${fuse_mnts[@]}"; do
    if mountpoint -q "$m"; then
      fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m"
    fi
  done
  [ -s "$tmp/mount-time.pid" ] && pids+=("$(cat "$tmp/mount-time.pid")")
  for p in "${pids[@]}"; do kill_pid "$p"; done
  [ "$fusectl_mounted" = 1 ] && umount /sys/fs/fuse/connections
  rm -rf "$tmp" "$shm"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() {  # wait_for SECS CMD...
  local secs=$1 i; shift
  for (( i=0; i<secs*10; i++ )); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}
now() { date +%s.%N; }
clk_tck=$(getconf CLK_TCK)
elapsed_s() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# Loop devices we attached, forgotten again as soon as they are detached
# (the number may be reused by someone else right after).
loop_attach() {  # loop_attach FILE: sets $loop
  loop=$(losetup -f --show "$1") || return 1
  loop_devs+=("$loop")
}
loop_detach() {  # loop_detach DEV
  local i back
  # Detach only if it still is ours (an autoclear detach may have freed the
  # number for someone else already).
  back=$(losetup -n -O BACK-FILE "$1" 2>/dev/null) || back=
  if [[ "$back" == *nbdfs-bench.* ]]; then
    losetup -d "$1" || return 1
  fi
  for i in "${!loop_devs[@]}"; do
    [ "${loop_devs[$i]}" != "$1" ] || loop_devs[$i]=
  done
}
# The FUSE control filesystem shows each connection's queue ("waiting"):
# sampled during fio runs, it tells how many requests the kernel really
# had outstanding with each FUSE server.
if ! mountpoint -q /sys/fs/fuse/connections; then
  mount -t fusectl none /sys/fs/fuse/connections 2>/dev/null \
    && fusectl_mounted=1 || true
fi

mkdir -p "$out"
rm -rf "$out/raw" "$out/results.md" "$out/results.json" "$out/bench.png" \
  "$out/chart.dat" "$out/gnuplot.log"
mkdir -p "$out/raw"

# --- data made once -----------------------------------------------------
# A random source for dd/nbdcopy writes and the initial fill, in RAM so the
# source never limits the rate.
head -c "$size_bytes" /dev/urandom > "$shm/src.img"

# The real-use tree: $files small files (1-8 KiB, seeded, so every run and
# client copies the same bytes) in ~100 per directory, plus their md5sums.
python3 - "$shm/tree" "$files" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(20240601)
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // 100))
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(rnd.randbytes(rnd.randint(1024, 8192)))
PY
(cd "$shm/tree" && find . -type f -print0 | sort -z | xargs -0 md5sum) > "$tmp/tree.md5"
truncate -s "$size_bytes" "$shm/ram.img"   # the real-use ceiling's disk

# --- nbdfuse 1.22 from the Debian 13 tree -----------------------------------
# Run on this host with the tree's own dynamic loader and libraries (libnbd
# 1.22, libfuse 3.17, gnutls 3.8): no chroot, so its FUSE mount is an
# ordinary mount that fio, dd and the loop device here use like the others.
# As root its libfuse mounts with mount(2) itself (no fusermount3 needed);
# unmounting is the host's fusermount3, as for every mount here.
tree=${NBDFS_DEBIAN13_TREE:-/var/cache/nbdfs/debian13}
nbdfuse13=() nbdfuse13_note= nbdfuse13_version=
tree_ld=
for f in "$tree"/lib64/ld-linux-*.so.* "$tree"/lib/ld-linux-*.so.*; do
  [ -e "$f" ] && { tree_ld=$f; break; }
done
tree_libs=$tree/usr/lib/$(uname -m)-linux-gnu:$tree/lib/$(uname -m)-linux-gnu
if [ ! -x "$tree/usr/bin/nbdfuse" ] || [ -z "$tree_ld" ]; then
  nbdfuse13_note="no Debian 13 tree with nbdfuse at $tree: run scripts/check-debian13.sh --shell true once (as root) to build it"
else
  # check-debian13.sh rebuilds the tree under an exclusive lock on this
  # file (and renames the new tree into place): a shared lock, held to the
  # end, keeps that from happening under us.
  exec {tree_lock}>>"$tree.lock"
  if ! flock -s -n "$tree_lock"; then
    nbdfuse13_note="the Debian 13 tree at $tree is being rebuilt (scripts/check-debian13.sh holds $tree.lock)"
  else
    nbdfuse13=("$tree_ld" --inhibit-cache --library-path "$tree_libs" "$tree/usr/bin/nbdfuse")
    # (All of its output, then the first line: head would cut the pipe.)
    nbdfuse13_version=$("${nbdfuse13[@]}" --version 2>&1) || true
    nbdfuse13_version=${nbdfuse13_version%%$'\n'*}
    if [[ "$nbdfuse13_version" != "nbdfuse "* ]]; then
      nbdfuse13_note="nbdfuse from $tree does not run here: $nbdfuse13_version"
      nbdfuse13=() nbdfuse13_version=
    fi
  fi
fi
[ -z "$nbdfuse13_note" ] || echo "bench: nbdfuse13 column skipped: $nbdfuse13_note" >&2
echo "$nbdfuse13_version" > "$out/raw/nbdfuse13.version"

# --- kernel TLS -------------------------------------------------------------
# Whether gnutls handed any session to the kernel (KTLS) during the TLS
# section: the kernel counts every TLS socket it set up in /proc/net/tls_stat.
ktls_sessions() {  # sessions the kernel's TLS has set up so far, or empty
  [ -r /proc/net/tls_stat ] || return 0
  awk '$1 ~ /^Tls(Tx|Rx)(Sw|Device)$/ { n += $2 } END { print n + 0 }' /proc/net/tls_stat
}
ktls_note() {  # ktls_note SESSIONS-BEFORE SESSIONS-AFTER: one honest line
  local conf=/etc/gnutls/config gnutls_says
  if grep -Eqi '^[[:space:]]*ktls[[:space:]]*=[[:space:]]*true' "$conf" 2>/dev/null; then
    gnutls_says="$conf enables it (ktls = true)"
  else
    gnutls_says="gnutls leaves it off unless $conf says ktls = true, and it does not"
  fi
  if [ -z "$1" ]; then
    local why="no /proc/net/tls_stat: the kernel's tls module is not loaded"
    if zgrep -q '^# CONFIG_TLS is not set' /proc/config.gz 2>/dev/null; then
      why="the kernel is built without CONFIG_TLS"
    fi
    echo "Kernel TLS (KTLS): not used: $why; $gnutls_says. Every TLS record is encrypted and decrypted in user space by gnutls (in nbdkit and in each client)."
  elif [ "$2" -gt "$1" ]; then
    echo "Kernel TLS (KTLS): used: the kernel set up $(( $2 - $1 )) TLS socket(s) during the TLS section (/proc/net/tls_stat); $gnutls_says."
  else
    echo "Kernel TLS (KTLS): not used: the kernel supports it but set up no TLS socket during the TLS section (/proc/net/tls_stat unchanged); $gnutls_says."
  fi
}

# --- server and clients ---------------------------------------------------
uri= uri13= nbdfs_addr= srv_pid= pki=
nbdfs_tls=()
read -r -a nbdfs_opts <<< "${NBDFS_OPTS:-}"
read -r -a nbdfuse_opts <<< "${NBDFUSE_OPTS:-}"
declare -A client_file client_pid client_conn client_state client_bdi client_ra

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_server() {  # start_server unix|tcp|tls
  local t=$1 pidf=$tmp/nbdkit-$1.pid port
  # One nbdkit for all the clients; 16 threads so the server is never
  # what limits a queue depth of 32 from two jobs.
  local common=(-P "$pidf" --threads 16 memory "$size_bytes" allocator=malloc)
  nbdfs_tls=()
  case "$t" in
    unix)
      nbdkit -U "$tmp/nbd.sock" "${common[@]}"
      uri="nbd+unix:///?socket=$tmp/nbd.sock" ;;
    tcp)
      port=$(free_port)
      nbdkit -i 127.0.0.1 -p "$port" "${common[@]}"
      uri="nbd://127.0.0.1:$port/" ;;
    tls)
      # Certificates made now (CA, server for localhost/127.0.0.1, client).
      pki=$tmp/pki
      [ -d "$pki" ] || bash "$SRCDIR/scripts/make-pki.sh" "$pki" >/dev/null \
        || die "scripts/make-pki.sh failed"
      port=$(free_port)
      nbdkit --tls=require --tls-certificates="$pki" \
        -i 127.0.0.1 -p "$port" "${common[@]}"
      # nbdfuse 1.22 takes the directory in the URI; 1.14's libnbd refuses
      # it there (local file access) and, as root, reads only /etc/pki/libnbd.
      uri=
      uri13="nbds://127.0.0.1:$port/?tls-certificates=$pki"
      nbdfs_addr="nbds://127.0.0.1:$port/"
      nbdfs_tls=(--tls-certificates "$pki") ;;
  esac
  [ "$t" = tls ] || { uri13=$uri; nbdfs_addr=$uri; }
  wait_for 20 test -s "$pidf" || die "nbdkit ($t) did not start"
  srv_pid=$(cat "$pidf"); pids+=("$srv_pid")
  if [ "$t" = tls ]; then
    wait_for 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" \
      || die "nbdkit ($t) does not listen on 127.0.0.1:$port"
    return 0   # filled through a client once they are mounted
  fi
  wait_for 20 nbdinfo --size "$uri" || die "nbdkit ($t) does not answer at $uri"
  # Fill the export once so every client reads allocated, random data.
  nbdcopy --flush "$shm/src.img" "$uri"
}

stop_server() {
  kill_pid "$srv_pid"
}

# The TLS server is filled through the first client that mounted (the
# host's nbdcopy cannot take a certificate directory), O_DIRECT so no
# client starts with the data in its page cache.
fill_through_client() {
  local c
  for c in "$@"; do
    [ "${client_state[$c]:-}" = ok ] || continue
    dd if="$shm/src.img" of="${client_file[$c]}" bs=1M count="$size_mib" \
      oflag=direct conv=notrunc,fsync status=none \
      || die "filling the TLS export through $c failed"
    return 0
  done
}

fuse_conn_of() {  # the fusectl directory of the mount at $1, or empty
  local dev
  dev=$(mountpoint -d "$1" 2>/dev/null) || return 0
  [ -d "/sys/fs/fuse/connections/${dev#*:}" ] \
    && echo "/sys/fs/fuse/connections/${dev#*:}"
  return 0
}

client_cmd() {  # client_cmd CLIENT MNT: in $cmd, what mounts the export as MNT/disk
  case "$1" in
    nbdfs) cmd=("$NBDFS" -f -n disk -C "$CONNS" "${nbdfs_opts[@]}" "${nbdfs_tls[@]}"
                "$nbdfs_addr" "$2") ;;
    nbdfuse) cmd=(nbdfuse -C "$CONNS" "${nbdfuse_opts[@]}" "$2/disk" "$uri") ;;
    nbdfuse13) cmd=("${nbdfuse13[@]}" -C "$CONNS" "${nbdfuse_opts[@]}" "$2/disk" "$uri13") ;;
  esac
}

start_client() {  # start_client nbdfs|nbdfuse|nbdfuse13 SECTION
  local c=$1 t=$2 mnt=$tmp/mnt-$1 log=$out/raw/$2-$1.log pid cmd
  mkdir -p "$mnt"
  client_state[$c]=ok client_file[$c]= client_pid[$c]= client_conn[$c]= client_bdi[$c]=
  if [ "$c" = nbdfs ] && [ ! -x "$NBDFS" ]; then
    client_state[$c]="$NBDFS not built"; return 0
  fi
  client_cmd "$c" "$mnt"
  "${cmd[@]}" >"$log" 2>&1 &
  pid=$!
  pids+=("$pid"); fuse_mnts+=("$mnt")
  if ! wait_for 30 test -f "$mnt/disk"; then
    client_state[$c]="did not mount: $(tail -n 1 "$log" 2>/dev/null)"
    mountpoint -q "$mnt" && fusermount3 -uz "$mnt"
    kill_pid "$pid"
    return 0
  fi
  local got
  got=$(stat -c %s "$mnt/disk")
  if [ "$got" != "$size_bytes" ]; then
    client_state[$c]="file size $got, expected $size_bytes"
  fi
  client_file[$c]=$mnt/disk
  client_pid[$c]=$pid
  client_conn[$c]=$(fuse_conn_of "$mnt")
  client_bdi[$c]=$(bdi_of "$mnt")
  # The readahead this client's mount runs with, as it set it up.
  client_ra[$c]=$(cat "${client_bdi[$c]}/read_ahead_kb" 2>/dev/null || echo unknown)
  echo "${client_ra[$c]}" > "$out/raw/$t-$c.readahead_kb"
}

bdi_of() {  # the /sys/class/bdi directory of the mount at $1, or empty
  local dev
  dev=$(mountpoint -d "$1" 2>/dev/null) || return 0
  [ -d "/sys/class/bdi/$dev" ] && echo "/sys/class/bdi/$dev"
  return 0
}

stop_client() {  # stop_client CLIENT
  local c=$1 mnt=$tmp/mnt-$1
  if mountpoint -q "$mnt"; then
    fusermount3 -u "$mnt" 2>/dev/null || { sleep 1; fusermount3 -uz "$mnt"; }
  fi
  [ -z "${client_pid[$c]:-}" ] || kill_pid "${client_pid[$c]}"
  client_pid[$c]= client_state[$c]=stopped
}

client_usable() {  # client_usable CLIENT: is the client mounted and alive?
  local c=$1
  [ "$c" = ceiling ] && return 0
  [ "${client_state[$c]}" = ok ] || return 1
  if ! kill -0 "${client_pid[$c]}" 2>/dev/null; then
    client_state[$c]="exited during the run (see raw/$cur_transport-$c.log)"
    return 1
  fi
  return 0
}

# section_clients SECTION: the clients of a section in $sec_clients (in
# rotation order); each one left out is named with its reason in
# OUT/raw/SECTION.absent ("client<TAB>reason"), which the report shows as
# n/a with the reason instead of as failed samples.
section_clients() {
  local t=$1 f=$out/raw/$1.absent
  : > "$f"
  if [ "$t" = tls ]; then
    sec_clients=(nbdfs nbdfuse13)
    if [[ "$(nbdfuse --version 2>&1)" == "nbdfuse 1.14."* ]]; then
      printf 'nbdfuse\t%s\n' "nbdfuse 1.14 cannot use a certificate directory as root (its libnbd refuses tls-certificates in a URI, and as root reads only /etc/pki/libnbd)" >> "$f"
    else
      printf 'nbdfuse\t%s\n' "this host's nbdfuse is not run in the TLS section, which compares nbdfs with nbdfuse 1.22 from the Debian 13 tree" >> "$f"
    fi
    printf 'ceiling\t%s\n' "fio's nbd engine (libnbd 1.14) refuses tls-certificates in a URI likewise" >> "$f"
  else
    sec_clients=(nbdfs nbdfuse nbdfuse13 ceiling)
  fi
  if [ ${#nbdfuse13[@]} -eq 0 ]; then
    printf 'nbdfuse13\t%s\n' "$nbdfuse13_note" >> "$f"
    local k keep=()
    for k in "${sec_clients[@]}"; do [ "$k" = nbdfuse13 ] || keep+=("$k"); done
    sec_clients=("${keep[@]}")
  fi
}

# --- the tests ------------------------------------------------------------
# Each writes OUT/raw/TRANSPORT/TEST/CLIENT-RUN.json: fio's JSON, or
# {"seconds": S, "bytes": B} for dd and real-use, or {"error": "..."}.

write_error() {  # write_error FILE MESSAGE
  python3 -c 'import json,sys; json.dump({"error": sys.argv[2]}, open(sys.argv[1], "w"))' "$1" "$2"
}
write_timing() {  # write_timing FILE SECONDS BYTES [EXTRA-JSON-FIELDS]
  printf '{"seconds": %s, "bytes": %s%s}\n' "$2" "$3" "${4:+, $4}" > "$1"
}

# Sample the FUSE queue of CLIENT every 0.1 s into FILE, in the background.
start_sampler() {
  local conn=${client_conn[$1]:-} f=$2
  sampler_pid=
  [ -n "$conn" ] && [ -r "$conn/waiting" ] || return 0
  ( while read -r w < "$conn/waiting"; do echo "$w"; sleep 0.1; done ) > "$f" 2>/dev/null &
  sampler_pid=$!
}
# CPU time (clock ticks, user + system, all threads) used so far by PID.
cpu_ticks() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return 0; }
  stat=${stat##*) }            # fields after "pid (comm) "
  set -- $stat
  echo $(( ${12} + ${13} ))     # utime, stime (fields 14 and 15)
}
stop_sampler() {
  [ -z "$sampler_pid" ] || { kill "$sampler_pid" 2>/dev/null; wait "$sampler_pid" 2>/dev/null || true; }
  sampler_pid=
}

fio_params() {  # fio_params TEST: the fio options of one fio test
  case "$1" in
    seq-read-1M-qd1)       echo "--rw=read --bs=1M --iodepth=1 --numjobs=1" ;;
    seq-read-1M-qd16)      echo "--rw=read --bs=1M --iodepth=16 --numjobs=1" ;;
    seq-write-1M-qd1)      echo "--rw=write --bs=1M --iodepth=1 --numjobs=1" ;;
    seq-write-1M-qd16)     echo "--rw=write --bs=1M --iodepth=16 --numjobs=1" ;;
    rand-read-4k-qd32-j1)  echo "--rw=randread --bs=4k --iodepth=32 --numjobs=1" ;;
    rand-read-4k-qd32-j2)  echo "--rw=randread --bs=4k --iodepth=32 --numjobs=2" ;;
    rand-write-4k-qd32-j1) echo "--rw=randwrite --bs=4k --iodepth=32 --numjobs=1" ;;
    rand-write-4k-qd32-j2) echo "--rw=randwrite --bs=4k --iodepth=32 --numjobs=2" ;;
    lat-read-4k-qd1)       echo "--rw=randread --bs=4k --iodepth=1 --numjobs=1" ;;
    *) return 1 ;;
  esac
}

# ceiling_params TEST: fio's nbd engine opens one connection per job, the
# FUSE clients CONNS: with a total queue depth of at least CONNS, the
# ceiling runs CONNS jobs, each on its own slice, sharing that depth.
ceiling_params() {
  local p d j
  p=$(fio_params "$1")
  d=$(sed -n 's/.*--iodepth=\([0-9]*\).*/\1/p' <<<"$p")
  j=$(sed -n 's/.*--numjobs=\([0-9]*\).*/\1/p' <<<"$p")
  if [ $(( d * j )) -ge "$CONNS" ] && [ $(( d * j % CONNS )) -eq 0 ]; then
    p=$(sed "s/--iodepth=[0-9]*/--iodepth=$(( d * j / CONNS ))/; s/--numjobs=[0-9]*/--numjobs=$CONNS/" <<<"$p")
    p="$p --offset_increment=$(( size_bytes / CONNS )) --size=$(( size_bytes / CONNS ))"
  fi
  echo "$p"
}

run_fio() {  # run_fio TEST CLIENT RESULT-FILE
  local test=$1 c=$2 res=$3 target params
  params="$(fio_params "$test") --size=$size_bytes"
  if [ "$c" = ceiling ]; then
    target=(--ioengine=nbd "--uri=$uri")
    params=$(ceiling_params "$test")
    [[ "$params" == *--size=* ]] || params="$params --size=$size_bytes"
  else
    target=(--ioengine=libaio --direct=1 "--filename=${client_file[$c]}")
  fi
  start_sampler "$c" "${res%.json}.waiting"
  local d0 s0 d1 s1 daemon=${client_pid[$c]:-}
  d0=$( [ -n "$daemon" ] && cpu_ticks "$daemon" || echo 0)
  s0=$(cpu_ticks "$srv_pid")
  # shellcheck disable=SC2046
  if ! timeout -k 5 $(( runtime * 4 + 60 )) \
       fio --name="$test" $params "${target[@]}" \
           --time_based --runtime="$runtime" \
           --group_reporting --randrepeat=0 --norandommap \
           --output-format=json --output="$res" >"${res%.json}.err" 2>&1; then
    stop_sampler
    write_error "$res" "fio failed: $(grep -v '^fio: connected' "${res%.json}.err" | tail -n 2 | tr '\n' ' ')"
    return 0
  fi
  stop_sampler
  d1=$( [ -n "$daemon" ] && cpu_ticks "$daemon" || echo 0)
  s1=$(cpu_ticks "$srv_pid")
  # CPU seconds the FUSE daemon and nbdkit spent on this run.
  awk -v d=$(( d1 - d0 )) -v s=$(( s1 - s0 )) -v hz="$clk_tck" \
    'BEGIN { printf "{\"daemon_cpu_s\": %.2f, \"server_cpu_s\": %.2f}\n", d / hz, s / hz }' \
    > "${res%.json}.cpu"
  rm -f "${res%.json}.err"
}

run_dd() {  # run_dd read|write CLIENT RESULT-FILE
  local dir=$1 c=$2 res=$3 t0 t1 rc=0
  drop_caches
  t0=$(now)
  if [ "$c" = ceiling ]; then
    # No FUSE: libnbd's own copier (multi-conn, many requests in flight).
    if [ "$dir" = read ]; then
      timeout -k 5 300 nbdcopy -C "$CONNS" "$uri" null: || rc=$?
    else
      timeout -k 5 300 nbdcopy -C "$CONNS" --flush "$shm/src.img" "$uri" || rc=$?
    fi
  else
    # Buffered (page cache, kernel readahead), 1 MiB at a time; the write
    # includes fsync so every byte has reached the server.
    if [ "$dir" = read ]; then
      timeout -k 5 300 dd if="${client_file[$c]}" of=/dev/null bs=1M \
        count="$size_mib" status=none || rc=$?
    else
      timeout -k 5 300 dd if="$shm/src.img" of="${client_file[$c]}" bs=1M \
        count="$size_mib" conv=notrunc,fsync status=none || rc=$?
    fi
  fi
  t1=$(now)
  if [ "$rc" -ne 0 ]; then
    write_error "$res" "dd-$dir failed with status $rc"
  else
    write_timing "$res" "$(elapsed_s "$t0" "$t1")" "$size_bytes"
  fi
}

# Real use: mkfs.ext4 on the file, loop-mount it, copy the tree in, sync,
# unmount, drop caches, mount again, verify every checksum, unmount.
run_real_use() {  # run_real_use CLIENT RESULT-FILE
  local c=$1 res=$2 file emnt=$tmp/ext4 loop= d t0 t1 err=
  if [ "$c" = ceiling ]; then file=$shm/ram.img; else file=${client_file[$c]}; fi
  mkdir -p "$emnt"
  drop_caches
  t0=$(now)
  {
    timeout -k 5 300 mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$file" \
      || { err="mkfs.ext4 failed"; false; }
  } && {
    loop_attach "$file" || { err="losetup failed"; false; }
  } && {
    mount "$loop" "$emnt" && plain_mnts+=("$emnt") || { err="mount failed"; false; }
  } && {
    timeout -k 5 600 cp -a "$shm/tree/." "$emnt/" && sync \
      || { err="copying the tree in failed"; false; }
  } && {
    umount "$emnt" && loop_detach "$loop" || { err="umount failed"; false; }
  } && {
    drop_caches
    loop_attach "$file" || { err="losetup (2) failed"; false; }
  } && {
    mount -o ro "$loop" "$emnt" || { err="re-mount failed"; false; }
  } && {
    (cd "$emnt" && timeout -k 5 600 md5sum -c --quiet "$tmp/tree.md5") \
      >"${res%.json}.md5" 2>&1 \
      || { err="checksums differ after re-mount (see ${res%.json}.md5)"; false; }
  } && {
    umount "$emnt" && loop_detach "$loop" || { err="umount (2) failed"; false; }
  } || true
  t1=$(now)
  if [ -n "$err" ]; then
    mountpoint -q "$emnt" && umount "$emnt"
    for d in "${loop_devs[@]}"; do [ -z "$d" ] || loop_detach "$d" || true; done
    write_error "$res" "$err"
  else
    rm -f "${res%.json}.md5"
    write_timing "$res" "$(elapsed_s "$t0" "$t1")" \
      "$(du -sb "$shm/tree" | cut -f1)" "\"files\": $files"
  fi
}

# Mount time: a fresh mount of CLIENT beside its running one, timed from
# the start until its file gives the export size (scripts/bench-mount-time.py),
# then unmounted.
run_mount_time() {  # run_mount_time CLIENT RESULT-FILE
  local c=$1 res=$2 mnt=$tmp/mt-$1 cmd pidf=$tmp/mount-time.pid
  mkdir -p "$mnt"
  fuse_mnts+=("$mnt")
  client_cmd "$c" "$mnt"
  timeout -k 5 60 python3 "$SRCDIR/scripts/bench-mount-time.py" "$res" "$pidf" \
    "${res%.json}.log" "$mnt/disk" "$size_bytes" "$mnt" "${cmd[@]}" \
    || write_error "$res" "timing the mount failed"
  # Only if the helper itself was cut short.
  if [ -s "$pidf" ]; then
    mountpoint -q "$mnt" && fusermount3 -uz "$mnt"
    kill_pid "$(cat "$pidf")"
    rm -f "$pidf"
  fi
  return 0
}

run_one() {  # run_one TEST CLIENT RUN
  local test=$1 c=$2 r=$3 res
  res=$out/raw/$cur_transport/$test/$c-$r.json
  mkdir -p "${res%/*}"
  if ! client_usable "$c"; then
    write_error "$res" "${client_state[$c]}"
    return 0
  fi
  local l0 l1 c0 c1 t0 short
  l0=$(cut -d' ' -f1 /proc/loadavg)
  c0=$(cpu_snapshot)
  t0=$(now)
  case "$test" in
    dd-read) run_dd read "$c" "$res" ;;
    dd-read-same-ra) with_same_readahead "$c" run_dd read "$c" "$res" ;;
    dd-write) run_dd write "$c" "$res" ;;
    real-use) run_real_use "$c" "$res" ;;
    mount-time) run_mount_time "$c" "$res" ;;
    *) run_fio "$test" "$c" "$res" ;;
  esac
  # The CPU counters tick 100 times a second: a sample shorter than a
  # second (mount time) is measured over one, the rest of it idle.
  short=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { d = 1 - (b - a); if (d > 0) printf "%.3f", d }')
  [ -z "$short" ] || sleep "$short"
  c1=$(cpu_snapshot)
  # What share of the machine's CPU went to anything but this benchmark
  # during the sample: the report refuses a verdict above FOREIGN_MAX
  # (bench-report.py). The 1-minute load average before and after is kept
  # for information only: the benchmark itself drives it to 3-6 here.
  l1=$(cut -d' ' -f1 /proc/loadavg)
  printf '{"load_before": %s, "load_after": %s, "cpus": %s, %s}\n' "$l0" "$l1" \
    "$(nproc)" "$(python3 "$SRCDIR/scripts/bench-cpu.py" foreign "$c0" "$c1")" \
    > "${res%.json}.load"
}

# cpu_snapshot: "BUSY TOTAL TREE" clock ticks (scripts/bench-cpu.py): the
# machine's CPU time and the bench's own (this shell, its live descendants,
# nbdkit, which daemonizes). Every sample's commands run in the foreground
# of this shell or of subshells and timeout it waits for, so what they used
# is in this shell's cutime/cstime once they end.
cpu_snapshot() {
  python3 "$SRCDIR/scripts/bench-cpu.py" snapshot $$ ${srv_pid:-}
}

# with_same_readahead CLIENT CMD...: run CMD with every FUSE mount's
# readahead set to nbdfs's, then put each back as its client set it.
FUSE_CLIENTS=(nbdfs nbdfuse nbdfuse13)
with_same_readahead() {
  local c=$1 k ra=${client_ra[nbdfs]:-}; shift
  if ! [[ "$ra" =~ ^[0-9]+$ ]]; then
    # Without nbdfs's figure there is nothing to equalise to.
    write_error "${!#}" "no readahead figure for nbdfs to equalise to"
    return 0
  fi
  for k in "${FUSE_CLIENTS[@]}"; do
    [ -n "${client_bdi[$k]:-}" ] && echo "$ra" > "${client_bdi[$k]}/read_ahead_kb"
  done
  echo "$ra" > "${res%.json}.readahead_kb"
  "$@"
  for k in "${FUSE_CLIENTS[@]}"; do
    [ -n "${client_bdi[$k]:-}" ] && [[ "${client_ra[$k]}" =~ ^[0-9]+$ ]] &&
      echo "${client_ra[$k]}" > "${client_bdi[$k]}/read_ahead_kb"
  done
  return 0
}

# --- the run --------------------------------------------------------------
start=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
# Not a refusal: the samples' own foreign-CPU figures decide the verdicts.
# Judged by the CPU others use now, over one second before anything
# starts: the load average lags by minutes (a previous run leaves it above
# 2 on an idle machine); it is printed, and shown in results.md.
idle_c0=$(cpu_snapshot); sleep 1; idle_c1=$(cpu_snapshot)
busy_now=$(python3 "$SRCDIR/scripts/bench-cpu.py" foreign "$idle_c0" "$idle_c1" \
  | sed -n 's/^"foreign_cpu": \([0-9.]*\),.*/\1/p')
if awk -v b="${busy_now:-0}" 'BEGIN { exit !(b > 0.10) }'; then
  echo "bench: warning: the machine is not idle (load average $load_start," \
    "$(awk -v b="$busy_now" 'BEGIN { printf "%.0f", b * 100 }')% of the CPU busy with other processes):" \
    "verdicts of rows where other processes take over ${FOREIGN_MAX_PCT}% of the CPU will be refused" >&2
fi
for cur_transport in "${sections[@]}"; do
  section_clients "$cur_transport"
  sec_tests=("${tests[@]}")
  if [ "$cur_transport" = tls ]; then
    sec_tests=()
    for t in "${tests[@]}"; do
      [[ " ${TLS_TESTS[*]} " == *" $t "* ]] && sec_tests+=("$t")
    done
    if [ ${#sec_tests[@]} -eq 0 ]; then
      echo "bench: tls: none of the selected tests is in the TLS section" >&2
      continue
    fi
    ktls0=$(ktls_sessions)
  fi
  echo "bench: $cur_transport: starting nbdkit memory $size and ${sec_clients[*]}" >&2
  start_server "$cur_transport"
  for c in "${sec_clients[@]}"; do
    [ "$c" = ceiling ] && continue
    start_client "$c" "$cur_transport"
    [ "${client_state[$c]}" = ok ] \
      || echo "bench: $cur_transport: $c: ${client_state[$c]}" >&2
  done
  [ "$cur_transport" != tls ] || fill_through_client "${sec_clients[@]}"
  for test in "${sec_tests[@]}"; do
    echo "bench: $cur_transport: $test" >&2
    run_clients=()
    for c in "${sec_clients[@]}"; do
      # Mount time has no ceiling: there is nothing to mount without FUSE.
      [ "$test" = mount-time ] && [ "$c" = ceiling ] && continue
      run_clients+=("$c")
    done
    n=${#run_clients[@]}
    for (( r=1; r<=runs; r++ )); do
      # Rotate who goes first, so no client always runs on a cold server.
      for (( k=0; k<n; k++ )); do
        run_one "$test" "${run_clients[$(( (r - 1 + k) % n ))]}" "$r"
      done
    done
  done
  for c in "${sec_clients[@]}"; do
    [ "$c" = ceiling ] || stop_client "$c"
  done
  stop_server
  if [ "$cur_transport" = tls ]; then
    ktls_note "$ktls0" "$(ktls_sessions)" > "$out/raw/ktls.txt"
  fi
done
elapsed=$(( $(date +%s) - start ))

# --- report ---------------------------------------------------------------
nbdfs_rev=$(git -C "$SRCDIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
python3 "$SRCDIR/scripts/bench-report.py" "$out" \
  --runs "$runs" --runtime "$runtime" --size "$size" --files "$files" \
  --elapsed "$elapsed" --nbdfs-rev "$nbdfs_rev" --foreign-max "$FOREIGN_MAX_PCT" \
  --load "$load_start / $(cut -d' ' -f1-3 /proc/loadavg)" --conns "$CONNS" \
  --transports "${sections[*]}" --tests "${tests[*]}"
# (gnuplot warns about a series with no points, e.g. nbdfs n/a: logged.)
gnuplot -e "datafile='$out/chart.dat'; outfile='$out/bench.png'" \
  "$SRCDIR/scripts/bench-chart.gp" 2>"$out/gnuplot.log" \
  || { cat "$out/gnuplot.log" >&2; die "gnuplot failed"; }
echo "bench: wrote $out/results.md, $out/results.json, $out/bench.png (${elapsed}s)" >&2
