#!/usr/bin/env python3
"""Block-level verifier for crashwriter.py logs that survives unreadable blocks.

ackcheck.py verify IMAGE LOG --seed S [--json]

Same rules as `crashwriter.py verify` (it reuses its block format and log parser), but reads the image
4 KiB block by block where a larger read fails, so one unreadable block does not hide the rest, and
classifies every block:

  ok_acked            holds exactly its last acknowledged write
  ok_newer_in_flight  holds a newer write that was in flight (never acknowledged): allowed
  ok_zero / ok_unacked_in_flight   never acknowledged: zeros or an in-flight write, allowed
  LOST                acknowledged data missing: zeros, older data ("rollback"), garbage, another
                      block's data, or an I/O error on a block whose last acknowledged write is the
                      newest that may be there
  ROLLBACK            (counted inside LOST too) an older acknowledged write replaced the newest one
  UNREADABLE_UNACKED  an I/O error (EIO) on a block that was never acknowledged or whose newest write was
                      in flight: no acknowledged data is lost, but the image does not read back (a real
                      disk returns the old or the new contents after a crash, never an error)
  GARBAGE_UNACKED     a never-acknowledged block holding bytes nobody wrote

Exit 0 iff LOST, UNREADABLE_UNACKED and GARBAGE_UNACKED are all 0. Prints one line of counters
("ackcheck: key=value ...") and the first problems on stderr; --json prints the counters as JSON too.
"""
import argparse
import errno
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crashwriter as cw  # noqa: E402

BLOCK = cw.BLOCK


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["verify"])
    ap.add_argument("image")
    ap.add_argument("log")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    acked, rounds = cw.read_log(a.log)
    last = {}
    for seq, off in acked:
        last[off] = seq
    acked_seqs_by_off = {}
    for seq, off in acked:
        acked_seqs_by_off.setdefault(off, set()).add(seq)
    flight = cw.in_flight(rounds)
    size = os.path.getsize(a.image)
    nblocks = size // BLOCK
    # offsets that an in-flight (unacknowledged) write newer than the last ack may have touched
    flight_offsets = {}
    for q in flight:
        o = cw.offset_for(a.seed, q, nblocks)
        flight_offsets.setdefault(o, set()).add(q)

    c = dict(blocks=0, ok_acked=0, ok_newer_in_flight=0, ok_zero=0, ok_unacked_in_flight=0,
             LOST=0, ROLLBACK=0, UNREADABLE_UNACKED=0, GARBAGE_UNACKED=0, eio_reads=0)
    problems = []

    def classify(o, b):
        c["blocks"] += 1
        want = last.get(o)
        newer_flight = any(want is None or q > want for q in flight_offsets.get(o, ()))
        if b is None:  # unreadable
            if want is not None and not newer_flight:
                c["LOST"] += 1
                problems.append((o, f"acknowledged write seq {want} unreadable (I/O error)"))
            else:
                c["UNREADABLE_UNACKED"] += 1
                problems.append((o, f"I/O error on a block whose newest write was never acknowledged "
                                    f"(last acked {want}, in flight {sorted(flight_offsets.get(o, ()))})"))
            return
        if b.count(0) == len(b):
            if want is None:
                c["ok_zero"] += 1
            else:
                c["LOST"] += 1
                problems.append((o, f"acknowledged write seq {want} lost: zeros"))
            return
        p = cw.parse_block(b)
        if p is None or p[1] != o or p[2] != a.seed or cw.offset_for(a.seed, p[0], nblocks) != o:
            if want is None:
                c["GARBAGE_UNACKED"] += 1
                problems.append((o, "garbage in a never-acknowledged block"))
            else:
                c["LOST"] += 1
                problems.append((o, f"acknowledged write seq {want} lost: garbage or another block's data"))
            return
        seq = p[0]
        if want is not None and seq == want:
            c["ok_acked"] += 1
        elif seq in flight and (want is None or seq > want):
            c["ok_newer_in_flight" if want is not None else "ok_unacked_in_flight"] += 1
        elif want is not None and seq < want:
            c["LOST"] += 1
            c["ROLLBACK"] += 1
            problems.append((o, f"rollback: holds seq {seq}, seq {want} was acknowledged later"))
        else:
            c["LOST" if want is not None else "GARBAGE_UNACKED"] += 1
            problems.append((o, f"holds seq {seq}, never issued in flight (last acked {want})"))

    fd = os.open(a.image, os.O_RDONLY)
    try:
        off = 0
        step = 1 << 20
        while off < size:
            n = min(step, size - off)
            try:
                data = os.pread(fd, n, off)
            except OSError as e:
                if e.errno not in (errno.EIO, errno.EUCLEAN, errno.EBADMSG):
                    raise
                data = None
            if data is not None and len(data) != n:
                # a short read inside the file: an error further on; go block by block (below)
                data = None
            if data is not None:
                for i in range(0, n, BLOCK):
                    classify(off + i, data[i:i + BLOCK])
            else:
                for i in range(0, n, BLOCK):
                    try:
                        b = os.pread(fd, BLOCK, off + i)
                    except OSError as e:
                        if e.errno not in (errno.EIO, errno.EUCLEAN, errno.EBADMSG):
                            raise
                        c["eio_reads"] += 1
                        b = None
                    if b is not None and len(b) != BLOCK:
                        c["LOST"] += 1
                        problems.append((off + i, f"short read of {len(b)} bytes inside the image"))
                        continue
                    classify(off + i, b)
            off += n
    finally:
        os.close(fd)
    c["acked_writes"] = len(acked)
    c["acked_offsets"] = len(last)
    print("ackcheck: " + " ".join(f"{k}={v}" for k, v in c.items()))
    if a.json:
        print(json.dumps(c))
    for o, why in problems[:20]:
        print(f"  offset {o}: {why}", file=sys.stderr)
    bad = c["LOST"] + c["UNREADABLE_UNACKED"] + c["GARBAGE_UNACKED"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
