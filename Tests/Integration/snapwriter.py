#!/usr/bin/env python3
"""Writer and checker for "a snapshot is the image at one instant" (Tests/Integration/91-*).

write LOG READY --vol NAME=PATH[:direct|:buffered] ... [--threads N] [--blocks B] [--seconds S] [--seed X]
    Prefills blocks 0..B-1 (4 KiB each) of every volume, then touches READY and, for S seconds, keeps N
    threads per volume writing random blocks. Block b of a volume is only ever written by thread
    b % N, so the writes to one block are strictly ordered. direct: O_DIRECT pwrite, acknowledged when
    it returns. buffered: batches of 1-8 pwrites, acknowledged when the fdatasync after them returns.
    Every write's CLOCK_MONOTONIC start (before the pwrite) and acknowledgement are logged to LOG (a
    pickle written at the end). A block holds a header (magic, volume index, block, write id), filler
    and a SHA-256, so torn, misplaced and foreign blocks are recognised.

check LOG --snap T0 T1 NAME=IMAGE [NAME=IMAGE...] [--json]
    T0/T1: CLOCK_MONOTONIC just before `snapshot create` started and just after it returned. For every
    block of every image of one snapshot (a consistency group) decides which write it holds (wk) and
    derives the instants the snapshot may have been taken at: T >= start(wk) (the write had been issued)
    and T <= ack(w(k+1)) (the next write to the block was not yet acknowledged). The snapshot is right
    iff every block holds a valid write of its own place, and the intersection of all these intervals
    with [T0, T1] is not empty: one instant explains every block of every volume - nothing acknowledged
    before it is missing, nothing issued after it is present. Prints counters; exit 1 on any violation.

fswork DIR LOG READY --seconds S [--threads N] [--seed X]
    A file workload on a mounted filesystem (ext4 on a loop device on an image): N threads, each in
    DIR/tN, create files (random size, fsync file and directory), replace some atomically (write
    NAME.tmp, fsync, rename over NAME, fsync the directory) and delete some (unlink, fsync the
    directory). Every operation's start and acknowledgement (CLOCK_MONOTONIC) and the content's SHA-256
    go to LOG (JSON, written at the end).

fscheck DIR LOG T0 T1
    DIR holds the files as a snapshot taken in [T0, T1] (mounted after journal replay). Per file the
    states (absent, each version, deleted) are ordered; the snapshot must show a state no older than
    the last one acknowledged before T0 and no newer than the last one started before T1. A file whose
    creation was in flight may hold anything (data=ordered only promises it after fsync). Files nobody
    created are reported too (lost+found/ and bulk/, unlogged bulk writes, aside).

final LOG NAME=IMAGE ...
    The live images after the writer stopped must hold the last write of every block.
"""
import argparse
import hashlib
import json
import mmap
import os
import pickle
import random
import struct
import sys
import threading
import time

BLOCK = 4096
MAGIC = b"TSNAPW01"
HEAD = struct.Struct("<8sIIQQ")  # magic, volume index, block, write id (thread << 40 | n), seed


def make_block(seed, vi, blk, wid):
    head = HEAD.pack(MAGIC, vi, blk, wid, seed)
    unit = hashlib.sha256(head).digest()
    n = BLOCK - len(head) - 32
    body = head + (unit * (n // 32 + 1))[:n]
    return body + hashlib.sha256(body).digest()


def parse_block(b):
    if len(b) != BLOCK or b[:8] != MAGIC:
        return None
    if hashlib.sha256(b[:-32]).digest() != b[-32:]:
        return None
    _, vi, blk, wid, seed = HEAD.unpack_from(b)
    return vi, blk, wid, seed


def cmd_write(a):
    vols = []
    for spec in a.vol:
        name, rest = spec.split("=", 1)
        path, _, mode = rest.partition(":")
        vols.append((name, path, mode or "direct"))
    nthreads, nblocks = a.threads, a.blocks
    log = {"seed": a.seed, "blocks": nblocks, "threads": nthreads, "vols": [v[0] for v in vols],
           "writes": {}}  # (vi, blk) -> list of (wid, start, ack)
    writes = log["writes"]
    lock = threading.Lock()
    errors = []

    # prefill: every block once (write id n = 0 of its thread), acknowledged by an fdatasync
    for vi, (name, path, mode) in enumerate(vols):
        fd = os.open(path, os.O_RDWR)
        t0 = time.monotonic()
        buf = bytearray()
        for blk in range(nblocks):
            buf += make_block(a.seed, vi, blk, (blk % nthreads) << 40)
        os.pwrite(fd, bytes(buf), 0)
        os.fdatasync(fd)
        t1 = time.monotonic()
        os.close(fd)
        for blk in range(nblocks):
            writes[(vi, blk)] = [((blk % nthreads) << 40, t0, t1)]
    open(a.ready, "w").close()
    deadline = time.monotonic() + a.seconds

    def worker(vi, path, mode, tid):
        try:
            flags = os.O_RDWR | (os.O_DIRECT if mode == "direct" else 0)
            fd = os.open(path, flags)
            buf = mmap.mmap(-1, BLOCK)
            rng = random.Random(a.seed * 1000003 + vi * 101 + tid)
            mine = [b for b in range(nblocks) if b % nthreads == tid]
            n = 0
            local = []
            while time.monotonic() < deadline:
                k = 1 if mode == "direct" else rng.randint(1, 8)
                pending = []
                for _ in range(k):
                    blk = rng.choice(mine)
                    n += 1
                    wid = (tid << 40) | n
                    buf[:] = make_block(a.seed, vi, blk, wid)
                    t0 = time.monotonic()
                    if os.pwritev(fd, [buf], blk * BLOCK) != BLOCK:
                        raise OSError(0, "short write")
                    pending.append((blk, wid, t0))
                if mode != "direct":
                    os.fdatasync(fd)
                t1 = time.monotonic()
                for blk, wid, t0 in pending:
                    local.append((blk, wid, t0, t1))
            os.close(fd)
            with lock:
                for blk, wid, t0, t1 in local:
                    writes[(vi, blk)].append((wid, t0, t1))
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"{path} thread {tid}: {e!r}")

    ths = [threading.Thread(target=worker, args=(vi, p, m, t))
           for vi, (_, p, m) in enumerate(vols) for t in range(nthreads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    for k in writes:
        writes[k].sort(key=lambda w: w[0] & ((1 << 40) - 1))
    with open(a.log, "wb") as f:
        pickle.dump(log, f)
    total = sum(len(v) for v in writes.values())
    print(f"snapwriter: {total} writes ({len(vols)} volumes x {nthreads} threads, {nblocks} blocks each)",
          file=sys.stderr)
    if errors:
        print("snapwriter: errors: " + "; ".join(errors), file=sys.stderr)
        return 1
    return 0


def read_image(path, nblocks):
    with open(path, "rb", buffering=0) as f:
        data = f.read(nblocks * BLOCK)
    if len(data) != nblocks * BLOCK:
        raise SystemExit(f"{path}: short read {len(data)}")
    return data


def cmd_check(a):
    with open(a.log, "rb") as f:
        log = pickle.load(f)
    seed, nblocks, writes = log["seed"], log["blocks"], log["writes"]
    t0, t1 = float(a.t0), float(a.t1)
    lo, hi = t0, t1          # the instants every block admits, intersected
    lo_why = hi_why = "the snapshot window"
    c = dict(blocks=0, acked_before=0, in_flight=0, volumes=0, violations=0)
    bad = []
    for spec in a.images:
        name, path = spec.split("=", 1)
        vi = log["vols"].index(name)
        c["volumes"] += 1
        data = read_image(path, nblocks)
        for blk in range(nblocks):
            c["blocks"] += 1
            b = data[blk * BLOCK:(blk + 1) * BLOCK]
            seq = writes[(vi, blk)]
            p = parse_block(b)
            if p is None or p[0] != vi or p[1] != blk or p[3] != seed:
                what = "zeros" if b.count(0) == BLOCK else ("garbage/torn" if p is None else f"block of {p[:2]}")
                bad.append(f"{name} block {blk}: {what}")
                continue
            ids = [w[0] for w in seq]
            if p[2] not in ids:
                bad.append(f"{name} block {blk}: write id {p[2]:#x} was never issued to it")
                continue
            k = ids.index(p[2])
            start = seq[k][1]
            nxt_ack = seq[k + 1][2] if k + 1 < len(seq) else float("inf")
            if start > t1:
                bad.append(f"{name} block {blk}: holds a write issued {start - t1:.6f}s after the snapshot returned")
            if nxt_ack < t0:
                bad.append(f"{name} block {blk}: misses write #{k + 1} acknowledged {t0 - nxt_ack:.6f}s "
                           f"before the snapshot started (holds #{k})")
            if nxt_ack < t0 or start > t1:
                continue
            if seq[k][2] <= t0:
                c["acked_before"] += 1
            else:
                c["in_flight"] += 1
            if start > lo:
                lo, lo_why = start, f"{name} block {blk} holds write #{k} issued at {start:.6f}"
            if nxt_ack < hi:
                hi, hi_why = nxt_ack, f"{name} block {blk} lacks write #{k + 1} acknowledged at {nxt_ack:.6f}"
    if not bad and lo > hi:
        bad.append(f"no single instant explains the snapshot ({c['volumes']} volumes): {lo_why}, but "
                   f"{hi_why} ({(lo - hi) * 1e6:.0f} us earlier)")
    c["violations"] = len(bad)
    c["window_us"] = round((t1 - t0) * 1e6)
    c["instant_range_us"] = round((hi - lo) * 1e6) if lo <= hi else -1
    print("snapwriter check: " + " ".join(f"{k}={v}" for k, v in c.items()))
    if a.json:
        print(json.dumps(c))
    for m in bad[:20]:
        print("  " + m, file=sys.stderr)
    return 1 if bad else 0


def cmd_final(a):
    with open(a.log, "rb") as f:
        log = pickle.load(f)
    bad = []
    for spec in a.images:
        name, path = spec.split("=", 1)
        vi = log["vols"].index(name)
        data = read_image(path, log["blocks"])
        for blk in range(log["blocks"]):
            want = make_block(log["seed"], vi, blk, log["writes"][(vi, blk)][-1][0])
            if data[blk * BLOCK:(blk + 1) * BLOCK] != want:
                bad.append(f"{name} block {blk}: not its last write")
    print(f"snapwriter final: {len(bad)} blocks wrong")
    for m in bad[:20]:
        print("  " + m, file=sys.stderr)
    return 1 if bad else 0


def cmd_fswork(a):
    events = {}  # relative name -> list of [kind, start, ack, sha]   kind: create | replace | delete
    lock = threading.Lock()
    deadline = None
    errors = []

    def fsync_dir(d):
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def worker(tid):
        try:
            rng = random.Random(a.seed * 7919 + tid)
            sub = f"t{tid}"
            d = os.path.join(a.dir, sub)
            os.makedirs(d, exist_ok=True)
            fsync_dir(a.dir)
            live = []
            n = 0
            mine = {}
            while time.monotonic() < deadline:
                r = rng.random()
                if r < 0.6 or len(live) < 8:
                    n += 1
                    name = f"{sub}/f{n:06d}"
                    data = rng.randbytes(rng.choice([512, 4096, 10000, 65536, 200000]))
                    t0 = time.monotonic()
                    with open(os.path.join(a.dir, name), "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    fsync_dir(d)
                    t1 = time.monotonic()
                    mine[name] = [["create", t0, t1, hashlib.sha256(data).hexdigest()]]
                    live.append(name)
                elif r < 0.85:
                    name = rng.choice(live)
                    data = rng.randbytes(rng.choice([100, 4096, 30000]))
                    p = os.path.join(a.dir, name)
                    t0 = time.monotonic()
                    with open(p + ".tmp", "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    os.rename(p + ".tmp", p)
                    fsync_dir(d)
                    t1 = time.monotonic()
                    mine[name].append(["replace", t0, t1, hashlib.sha256(data).hexdigest()])
                else:
                    name = live.pop(rng.randrange(len(live)))
                    t0 = time.monotonic()
                    os.unlink(os.path.join(a.dir, name))
                    fsync_dir(d)
                    t1 = time.monotonic()
                    mine[name].append(["delete", t0, t1, None])
            with lock:
                events.update(mine)
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"thread {tid}: {e!r}")

    open(a.ready, "w").close()
    deadline = time.monotonic() + a.seconds
    ths = [threading.Thread(target=worker, args=(t,)) for t in range(a.threads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    with open(a.log, "w") as f:
        json.dump(events, f)
    nops = sum(len(v) for v in events.values())
    print(f"snapwriter fswork: {nops} acknowledged operations on {len(events)} files", file=sys.stderr)
    if errors:
        print("snapwriter fswork: errors: " + "; ".join(errors), file=sys.stderr)
        return 1
    return 0


def cmd_fscheck(a):
    with open(a.log) as f:
        events = json.load(f)
    t0, t1 = float(a.t0), float(a.t1)
    c = dict(files=0, present=0, absent=0, acked_state=0, in_flight_state=0, violations=0)
    bad = []
    for name, evs in sorted(events.items()):
        c["files"] += 1
        p = os.path.join(a.dir, name)
        try:
            with open(p, "rb") as f:
                got = hashlib.sha256(f.read()).hexdigest()
        except FileNotFoundError:
            got = None
        # states: index -1 = not yet created, i = after event i
        lo = -1
        hi = -1
        for i, (kind, s, k, sha) in enumerate(evs):
            if k < t0:
                lo = i
            if s <= t1:
                hi = i
        allowed = {}
        for i in range(lo, hi + 1):
            allowed.setdefault(None if i < 0 or evs[i][0] == "delete" else evs[i][3], i)
        creating = evs[0][1] <= t1 and evs[0][2] >= t0   # creation in flight: contents may be anything
        c["present" if got is not None else "absent"] += 1
        if got in allowed:
            c["acked_state" if allowed[got] == lo else "in_flight_state"] += 1
        elif got is not None and creating and lo < 0:
            c["in_flight_state"] += 1
        else:
            want = "absent" if got is None else "other contents"
            bad.append(f"{name}: {want}; allowed states {lo}..{hi} of "
                       f"{[(e[0], round(e[1] - t0, 4), round(e[2] - t0, 4)) for e in evs]}")
    for root, dirs, files in os.walk(a.dir):
        dirs[:] = [d for d in dirs if d not in ("lost+found", "bulk")]
        for fn in files:
            rel = os.path.relpath(os.path.join(root, fn), a.dir)
            if rel not in events and not rel.endswith(".tmp"):
                bad.append(f"{rel}: a file nobody created")
    c["violations"] = len(bad)
    print("snapwriter fscheck: " + " ".join(f"{k}={v}" for k, v in c.items()))
    for m in bad[:20]:
        print("  " + m, file=sys.stderr)
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("log")
    w.add_argument("ready")
    w.add_argument("--vol", action="append", required=True)
    w.add_argument("--threads", type=int, default=2)
    w.add_argument("--blocks", type=int, default=4096)
    w.add_argument("--seconds", type=float, default=10)
    w.add_argument("--seed", type=int, default=1)
    c = sub.add_parser("check")
    c.add_argument("log")
    c.add_argument("--snap", nargs=2, metavar=("T0", "T1"), dest="window", required=True)
    c.add_argument("images", nargs="+")
    c.add_argument("--json", action="store_true")
    f = sub.add_parser("final")
    f.add_argument("log")
    f.add_argument("images", nargs="+")
    fw = sub.add_parser("fswork")
    fw.add_argument("dir")
    fw.add_argument("log")
    fw.add_argument("ready")
    fw.add_argument("--seconds", type=float, default=10)
    fw.add_argument("--threads", type=int, default=2)
    fw.add_argument("--seed", type=int, default=1)
    fc = sub.add_parser("fscheck")
    fc.add_argument("dir")
    fc.add_argument("log")
    fc.add_argument("t0")
    fc.add_argument("t1")
    a = ap.parse_args()
    if a.cmd == "check":
        a.t0, a.t1 = a.window
    return {"write": cmd_write, "check": cmd_check, "final": cmd_final, "fswork": cmd_fswork,
            "fscheck": cmd_fscheck}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
