#!/usr/bin/env python3
"""Crash-test writer and verifier for Tessera images.

write IMAGE LOG [--seed S] [--direct] [--batch N] [--max-seconds T]
    Loops until killed (or an I/O error, or T seconds): picks batches of 1..N writes; each write puts one
    4 KiB block at a 4 KiB-aligned offset. The offset of sequence number q is a pure function of (seed, q),
    and the block's content is a pure function of (q, offset): a header (magic, q, offset, seed), filler,
    and a SHA-256 of everything before it. After the batch it calls fdatasync on the image; only after
    fdatasync returned does it append "q offset" for each write of the batch to LOG and fsync LOG.
    Continues the sequence from LOG (a new round starts past every number the previous round might have
    had in flight) and marks each round with "# round START BATCH DIRECT".

verify IMAGE LOG [--seed S]
    For every 4 KiB block of the image: let L be the last logged (acknowledged) write to that offset.
      - no logged write: the block must be all zeros, or a valid block written to this offset by a write
        that was in flight (unlogged) when a round ended;
      - else: the block must be exactly the write L, or a valid block of a newer in-flight write to this
        offset. Anything else (older data, zeros, garbage, a block of another offset) is a lost write.
    Prints counts; exits 1 on any violation (listing the first ones).

selftest
    Runs the writer against a plain file with simulated kills and checks the verifier accepts it and
    rejects injected damage.
"""

import argparse
import hashlib
import mmap
import os
import random
import signal
import struct
import sys
import time

BLOCK = 4096
MAGIC = b"TSRCRSH1"
HEADER = struct.Struct("<8sQQQ")  # magic, seq, offset, seed
DIGEST = 32


def offset_for(seed, seq, nblocks):
    h = hashlib.sha256(struct.pack("<QQ", seed, seq)).digest()
    return (int.from_bytes(h[:8], "little") % nblocks) * BLOCK


def make_block(seed, seq, offset):
    head = HEADER.pack(MAGIC, seq, offset, seed)
    fill_len = BLOCK - len(head) - DIGEST
    unit = hashlib.sha256(head).digest()
    filler = (unit * (fill_len // len(unit) + 1))[:fill_len]
    body = head + filler
    return body + hashlib.sha256(body).digest()


def parse_block(b):
    """Returns (seq, offset, seed) of a valid block, or None."""
    if len(b) != BLOCK or b[:8] != MAGIC:
        return None
    if hashlib.sha256(b[:-DIGEST]).digest() != b[-DIGEST:]:
        return None
    _, seq, off, seed = HEADER.unpack_from(b)
    return seq, off, seed


def read_log(path):
    """Returns (acked: list of (seq, off)), rounds: list of (start, batch, direct, last_acked_seq_or_None))."""
    acked = []
    rounds = []
    if not os.path.exists(path):
        return acked, rounds
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn last line (the log is on local disk, but be safe): ignore
            line = line.strip()
            if not line:
                continue
            if line.startswith("# round"):
                _, _, start, batch, direct = line.split()
                rounds.append([int(start), int(batch), direct == "1", None])
                continue
            seq, off = line.split()
            acked.append((int(seq), int(off)))
            if rounds:
                rounds[-1][3] = int(seq)
    return acked, rounds


def next_start(rounds):
    """The first sequence number of a new round: past everything any earlier round could have issued."""
    if not rounds:
        return 1
    start, batch, _, last = rounds[-1]
    base = last + 1 if last is not None else start
    return base + batch


def in_flight(rounds):
    """Sequence numbers that may have been written but never acknowledged: per round, the batch after the
    last acknowledged write (at most `batch` numbers)."""
    s = set()
    for start, batch, _, last in rounds:
        base = last + 1 if last is not None else start
        s.update(range(base, base + batch))
    return s


def cmd_write(a):
    acked, rounds = read_log(a.log)
    seq = next_start(rounds)
    size = os.path.getsize(a.image)
    nblocks = size // BLOCK
    if nblocks < 1:
        sys.exit("image too small")
    flags = os.O_RDWR | (os.O_DIRECT if a.direct else 0)
    fd = os.open(a.image, flags)
    logfd = os.open(a.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(logfd, f"# round {seq} {a.batch} {1 if a.direct else 0}\n".encode())
    os.fsync(logfd)
    buf = mmap.mmap(-1, BLOCK)  # page-aligned, for O_DIRECT
    rng = random.Random(seq ^ a.seed)
    deadline = time.monotonic() + a.max_seconds if a.max_seconds else None
    done = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            n = rng.randint(1, a.batch)
            batch = []
            for _ in range(n):
                off = offset_for(a.seed, seq, nblocks)
                buf[:] = make_block(a.seed, seq, off)
                w = os.pwritev(fd, [buf], off)
                if w != BLOCK:
                    raise OSError(0, f"short write {w} at {off}")
                batch.append((seq, off))
                seq += 1
            os.fdatasync(fd)
            os.write(logfd, "".join(f"{q} {o}\n" for q, o in batch).encode())
            os.fsync(logfd)
            done += len(batch)
    except OSError as e:
        print(f"crashwriter: stopped after {done} acknowledged writes: {e}", file=sys.stderr)
        return 3
    finally:
        os.close(logfd)
        try:
            os.close(fd)
        except OSError:
            pass
    print(f"crashwriter: {done} acknowledged writes, deadline reached", file=sys.stderr)
    return 0


def cmd_verify(a):
    acked, rounds = read_log(a.log)
    last = {}
    for seq, off in acked:
        last[off] = seq
    flight = in_flight(rounds)
    size = os.path.getsize(a.image)
    stats = dict(blocks=0, zero=0, last_acked=0, newer_in_flight=0, in_flight_unacked_offset=0)
    bad = []
    with open(a.image, "rb", buffering=0) as f:
        off = 0
        while off < size:
            chunk = f.read(min(1 << 20, size - off))
            if not chunk:
                bad.append((off, f"short read at {off} (size {size})"))
                break
            for i in range(0, len(chunk), BLOCK):
                b = chunk[i:i + BLOCK]
                o = off + i
                stats["blocks"] += 1
                want = last.get(o)
                if b.count(0) == len(b):
                    if want is None:
                        stats["zero"] += 1
                    else:
                        bad.append((o, f"acknowledged write seq {want} lost: block reads as zeros"))
                    continue
                p = parse_block(b)
                if p is None:
                    bad.append((o, f"garbage (bad magic or checksum); last acknowledged seq {want}"))
                    continue
                seq, boff, seed = p
                if boff != o or seed != a.seed or offset_for(a.seed, seq, size // BLOCK) != o:
                    bad.append((o, f"block of another place (seq {seq} for offset {boff}, seed {seed}); "
                                   f"last acknowledged seq {want}"))
                    continue
                if want is not None and seq == want:
                    stats["last_acked"] += 1
                elif seq in flight and (want is None or seq > want):
                    stats["newer_in_flight" if want is not None else "in_flight_unacked_offset"] += 1
                elif want is not None and seq < want:
                    bad.append((o, f"stale: holds seq {seq}, but seq {want} was acknowledged later"))
                else:
                    bad.append((o, f"holds seq {seq}, which was never issued in flight (last acked {want})"))
            off += len(chunk)
    stats["acked_writes"] = len(acked)
    stats["acked_offsets"] = len(last)
    stats["rounds"] = len(rounds)
    stats["violations"] = len(bad)
    print("crashwriter verify: " + " ".join(f"{k}={v}" for k, v in stats.items()))
    for o, why in bad[:20]:
        print(f"  offset {o}: {why}", file=sys.stderr)
    return 1 if bad else 0


def cmd_selftest(a):
    import subprocess
    import tempfile
    me = os.path.abspath(__file__)
    with tempfile.TemporaryDirectory() as d:
        img, log = os.path.join(d, "img"), os.path.join(d, "log")
        with open(img, "wb") as f:
            f.truncate(16 << 20)
        for r in range(4):
            args = [sys.executable, me, "write", img, log, "--seed", "7", "--batch", "4"]
            if r % 2:
                args.append("--direct")
            p = subprocess.Popen(args, stderr=subprocess.DEVNULL)
            time.sleep(0.3 + 0.2 * r)
            p.send_signal(signal.SIGKILL)
            p.wait()
            rc = subprocess.call([sys.executable, me, "verify", img, log, "--seed", "7"])
            assert rc == 0, f"verify failed after round {r}"
        acked, rounds = read_log(log)
        assert len(rounds) == 4 and len(acked) > 20, (len(rounds), len(acked))
        # a lost acknowledged write (zeroed) must be caught
        seq, off = acked[-1]
        last = {o: q for q, o in acked}
        off = next(o for o, q in last.items())
        with open(img, "r+b") as f:
            f.seek(off)
            good = f.read(BLOCK)
            f.seek(off)
            f.write(bytes(BLOCK))
        assert subprocess.call([sys.executable, me, "verify", img, log, "--seed", "7"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 1, "zeroed block not caught"
        # a stale (older) version must be caught: write an older seq's block for this offset if one exists,
        # else a block with a flipped byte
        older = [q for q, o in acked if o == off and q < last[off]]
        with open(img, "r+b") as f:
            f.seek(off)
            if older:
                f.write(make_block(7, older[0], off))
            else:
                f.write(good[:100] + bytes([good[100] ^ 1]) + good[101:])
        assert subprocess.call([sys.executable, me, "verify", img, log, "--seed", "7"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 1, "stale block not caught"
        # garbage in a never-written block must be caught
        with open(img, "r+b") as f:
            f.seek(off)
            f.write(good)
            free = next(b * BLOCK for b in range(4096) if b * BLOCK not in last)
            f.seek(free)
            f.write(b"x" * BLOCK)
        assert subprocess.call([sys.executable, me, "verify", img, log, "--seed", "7"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 1, "garbage not caught"
        with open(img, "r+b") as f:
            f.seek(free)
            f.write(bytes(BLOCK))
        assert subprocess.call([sys.executable, me, "verify", img, log, "--seed", "7"]) == 0, "repair not accepted"
    print("crashwriter selftest: ok")
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("image")
    w.add_argument("log")
    w.add_argument("--seed", type=int, default=1)
    w.add_argument("--direct", action="store_true")
    w.add_argument("--batch", type=int, default=8)
    w.add_argument("--max-seconds", type=float, default=120)
    v = sub.add_parser("verify")
    v.add_argument("image")
    v.add_argument("log")
    v.add_argument("--seed", type=int, default=1)
    sub.add_parser("selftest")
    a = ap.parse_args()
    return {"write": cmd_write, "verify": cmd_verify, "selftest": cmd_selftest}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
