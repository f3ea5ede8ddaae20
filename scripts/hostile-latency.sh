#!/usr/bin/env bash
# What hostile hosts cost a well-behaved one (issue 12 item 4): the target on core 0, a
# well-behaved host (nvmf-perf, core 1) measured alone, then while hostile hosts run, then alone
# again, several rounds; prints each run's IOPS, p50 and p99 and the medians.
#
#   scripts/hostile-latency.sh [-r ROUNDS] [-t SECONDS]
#
# The hostile hosts (scripts/vm-free Python, raw NVMe/TCP), all at once:
#   silent    200 connections that never send an ICReq (reopened as the target closes them)
#   trickle   an ICReq a byte a second
#   stall     a controller whose I/O queue asks for 64 reads of 128 KiB and never reads its
#             socket (keep-alive 2 s, never sent: the target tears it down; it comes back)
#   flood     a 16-entry I/O queue sent 1,000 reads without reading (the target ends it with a
#             C2HTermReq; it comes back)
#   noR2T     H2CData for a write the target never asked for (a C2HTermReq; it comes back)
# Not part of the test command: timings are measurements, not pass/fail.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
secs=5
while getopts "r:t:" o; do
  case $o in
    r) rounds=$OPTARG ;;
    t) secs=$OPTARG ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
  esac
done
cargo build --release -q -p nvmf-target -p nvmf-initiator
bin=target/release/nvmf-target
perf=target/release/nvmf-perf
port=5531
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
"$bin" print-default-config | sed "s/^port = 4420/port = $port/; s/^port = 8009/port = 5532/; s/^control_socket = .*/control_socket = \"\"/" >"$out/t.toml"
taskset -c 0 "$bin" --config "$out/t.toml" --log-level warn 2>"$out/target.log" &
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

hostile() { # SECONDS: every hostile host at once, on core 1 beside the measured one
  taskset -c 1 python3 - "$port" "$1" <<'PY'
import socket, struct, sys, threading, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
end = time.time() + secs
NQN = b"nqn.2026-01.io.nvmf-target:default"
stats = {"silent closed": 0, "trickle closed": 0, "stall torn down": 0, "flood cut off": 0, "noR2T cut off": 0}

def conn():
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    return s

def icreq():
    b = bytearray(128); b[2] = 128; struct.pack_into("<I", b, 4, 128); return bytes(b)

def cmd(op, cid, nsid=0, cdw10=0, cdw11=0, cdw12=0, sgl_len=0, sgl_id=0x5A):
    b = bytearray(64); b[0] = op; b[1] = 0x40; struct.pack_into("<HI", b, 2, cid, nsid)
    struct.pack_into("<QI", b, 24, 0, sgl_len); b[39] = sgl_id
    struct.pack_into("<III", b, 40, cdw10, cdw11, cdw12)
    return bytes(b)

def capsule(c, data=b""):
    return bytes([4, 0, 72, 72 if data else 0]) + struct.pack("<I", 72 + len(data)) + c + data

def recv_pdu(s):
    h = b""
    while len(h) < 8:
        d = s.recv(8 - len(h))
        if not d: raise ConnectionError("closed")
        h += d
    plen = struct.unpack_from("<I", h, 4)[0]
    rest = b""
    while len(rest) < plen - 8:
        d = s.recv(plen - 8 - len(rest))
        if not d: raise ConnectionError("closed")
        rest += d
    return h + rest

def connect(s, qid, cntlid, sqsize, kato, host):
    d = bytearray(1024); d[0:16] = bytes([host] * 16); struct.pack_into("<H", d, 16, cntlid)
    d[256:256 + len(NQN)] = NQN
    hn = b"nqn.2014-08.org.nvmexpress:uuid:%08x-0000-4000-8000-000000000000" % host
    d[512:512 + len(hn)] = hn
    c = bytearray(cmd(0x7F, 1, nsid=1, cdw10=qid << 16, cdw11=sqsize - 1, cdw12=kato, sgl_len=1024, sgl_id=0x01))
    s.sendall(capsule(bytes(c), bytes(d)))
    while True:
        p = recv_pdu(s)
        if p[0] == 5:
            return struct.unpack_from("<H", p, 8)[0]

def controller(host, kato=0):
    a = conn(); a.sendall(icreq()); recv_pdu(a)
    cntlid = connect(a, 0, 0xFFFF, 32, kato, host)
    a.sendall(capsule(cmd(0x7F, 2, nsid=0, cdw11=0x14, cdw12=1 | (6 << 16) | (4 << 20))))
    recv_pdu(a)
    return a, cntlid

def io_queue(cntlid, host, sqsize):
    q = conn(); q.sendall(icreq()); recv_pdu(q)
    connect(q, 1, cntlid, sqsize, 0, host)
    return q

def silent():
    socks = []
    while time.time() < end:
        while len(socks) < 200:
            socks.append(conn())
        time.sleep(1)
        alive = []
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    stats["silent closed"] += 1; s.close(); continue
            except BlockingIOError:
                pass
            except OSError:
                stats["silent closed"] += 1; s.close(); continue
            alive.append(s)
        socks = alive

def trickle():
    while time.time() < end:
        s = conn(); b = icreq()
        try:
            for i in range(len(b)):
                if time.time() > end: return
                s.sendall(b[i:i + 1]); time.sleep(1)
        except OSError:
            stats["trickle closed"] += 1

def stall():
    while time.time() < end:
        try:
            a, cntlid = controller(0x51, kato=2000)
            q = io_queue(cntlid, 0x51, 128)
            q.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            for i in range(64):
                q.sendall(capsule(cmd(0x02, 10 + i, nsid=1, cdw10=i * 256, cdw12=255, sgl_len=131072)))
            # Never read q; a waits for the target to end the association.
            a.settimeout(60)
            while a.recv(4096): pass
            stats["stall torn down"] += 1
        except OSError:
            stats["stall torn down"] += 1
        time.sleep(0.5)

def flood():
    while time.time() < end:
        try:
            a, cntlid = controller(0x52)
            q = io_queue(cntlid, 0x52, 16)
            for i in range(1000):
                q.sendall(capsule(cmd(0x02, i, nsid=1, cdw10=i, cdw12=7, sgl_len=4096)))
        except OSError:
            stats["flood cut off"] += 1
        time.sleep(0.5)

def no_r2t():
    while time.time() < end:
        try:
            a, cntlid = controller(0x53)
            q = io_queue(cntlid, 0x53, 32)
            h = bytes([6, 0, 24, 24]) + struct.pack("<IHHII", 24 + 4096, 7, 0, 0, 4096) + bytes(4)
            q.sendall(h + bytes(4096))
            q.settimeout(10)
            while q.recv(4096): pass
            stats["noR2T cut off"] += 1
        except OSError:
            stats["noR2T cut off"] += 1
        time.sleep(0.5)

ts = [threading.Thread(target=f, daemon=True) for f in (silent, trickle, stall, flood, no_r2t)]
for t in ts: t.start()
while time.time() < end: time.sleep(0.5)
print("hostile:", ", ".join("%s %d" % kv for kv in stats.items()), flush=True)
PY
}

measure() { # LABEL: one nvmf-perf run per queue depth
  for qd in 1 32; do
    "$perf" -s "$port" --core 1 -w randread -o 4096 -q "$qd" -t "$secs" --json "$out/p.json" >/dev/null 2>&1
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(sys.argv[2], "qd"+sys.argv[3], round(j["iops"]), j["lat_us"]["p50"], j["lat_us"]["p99"])' \
      "$out/p.json" "$1" "$qd" | tee -a "$out/runs.txt"
  done
}

for r in $(seq "$rounds"); do
  measure alone
  hostile $((secs * 2 + 8)) >"$out/hostile.$r.log" 2>&1 &
  h=$!
  sleep 3
  measure hostile
  wait "$h" || true
  cat "$out/hostile.$r.log"
done
echo "== medians (IOPS, p50 us, p99 us) over $rounds rounds"
python3 - "$out/runs.txt" <<'PY'
import collections, statistics, sys
d = collections.defaultdict(list)
for l in open(sys.argv[1]):
    k, q, iops, p50, p99 = l.split()
    d[(k, q)].append((float(iops), float(p50), float(p99)))
for q in ("qd1", "qd32"):
    for k in ("alone", "hostile"):
        v = d[(k, q)]
        print("%-8s %-5s IOPS %8.0f  p50 %7.1f  p99 %7.1f" % (k, q, *[statistics.median(x[i] for x in v) for i in range(3)]))
PY
grep -ciE "panicked|error" "$out/target.log" | sed 's/^/target log lines with errors: /'
