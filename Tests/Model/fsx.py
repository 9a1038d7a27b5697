#!/usr/bin/env python3
"""fsx: Tessera's model checker of one image file (python3, standard library only).

Drives one image file inside a Tessera mount with random operations and checks every result against an
in-memory model (a bytearray whose length is the file size):

  read / write          buffered pread/pwrite at any offset and length (unaligned), writes past EOF grow
  dread / dwrite        O_DIRECT through a second descriptor, 512- or 4096-aligned offsets, lengths and
                        memory (an anonymous mmap; 512-aligned ops sometimes use a buffer 512 bytes in)
  zwrite                writes of zeros (whole chunks: Tessera unmaps them) and data with a zeroed chunk
  mapread / mapwrite    through a shared mmap of the buffered descriptor (mapwrite ends with msync)
  mapwrite_ext          mmap write past the old EOF: ftruncate up to any byte size, then write the new
                        range (up to the new, often odd, EOF) through a shared mmap, msync
  fsync / fdatasync
  punch                 fallocate(PUNCH_HOLE|KEEP_SIZE)
  zero_keep / zero_ext  fallocate(ZERO_RANGE) with and without KEEP_SIZE (the latter may grow the file)
  prealloc              fallocate(0): thin, only grows the size
  truncate              ftruncate/truncate(2) to any byte size (odd ones most of the time), up or down
  truncate_regrow       shrink to an odd size inside a chunk with data, grow again (truncate, a write
                        past EOF, fallocate or zero range): the old bytes past the cut must read zeros
  seek                  SEEK_DATA/SEEK_HOLE: a reported hole reads as zeros up to the next data, and
                        SEEK_DATA never skips a nonzero byte of the model
  copy                  copy_file_range between two ranges of the image (source holes stay holes)
  reopen                close both descriptors and open them again
  open_trunc            close, open(O_TRUNC): the file must be empty, reopen
  remount               (--remount-cmd) fsync (or, every other time, only close: a clean unmount
                        flushes), close, run the command, reopen, then the whole file and the size must
                        match the model exactly

Offsets and lengths straddle chunk boundaries (--chunk-size, 1 MiB by default) about half of the time.
The whole file is verified (through O_DIRECT, so the daemon answers, not the page cache; every third time
buffered too) every --verify-every operations, after every remount and at the end, and a full
SEEK_DATA/SEEK_HOLE walk checks the map.

The operation sequence depends only on the seed (never on what the file returned), so a seed replays.
On the first mismatch it prints the seed, the last 20 operations, the first differing offset with the
expected and actual bytes, the earlier operations that touched that offset, and exits 1.
Exit codes: 0 all matched, 1 mismatch (or an unexpected error from an operation), 2 usage or an internal
error of fsx, 3 the remount command failed.
The last line is always `fsx-result: seed=S ops=N remounts=R mismatches=M seconds=T`.

  python3 Tests/Model/fsx.py MNT/fsx.img --seed 42 --ops 10000 --remount-cmd 'CMD' --remount-every 2500
  (replay a failure with the printed command; --skip KIND,... leaves operations out to narrow it down)
Tests/Integration/85-fsx.sh runs it in CI, Scripts/soak for hours.
"""

import argparse
import collections
import ctypes
import ctypes.util
import errno
import mmap
import os
import random
import shutil
import subprocess
import sys
import time

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
SEEK_DATA = getattr(os, "SEEK_DATA", 3)
SEEK_HOLE = getattr(os, "SEEK_HOLE", 4)
O_DIRECT = getattr(os, "O_DIRECT", 0o40000)
KIB = 1024
MIB = 1024 * 1024
DIRECT_BUF = 4 * MIB + 8192  # largest O_DIRECT transfer (4 MiB) plus room for a 512-byte memory offset
ZEROS = bytes(256 * 1024)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_fallocate = _libc.fallocate64
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int


def fallocate(fd, mode, off, length):
    if _fallocate(fd, mode, off, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def parse_size(text):
    t = text.strip().upper()
    mult = 1
    for suffix, m in (("K", KIB), ("M", MIB), ("G", 1024 * MIB)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    return int(t) * mult


def fmt(n):
    return "%d(0x%x)" % (n, n)


class Mismatch(Exception):
    """A result that disagrees with the model (or an operation that failed unexpectedly)."""

    def __init__(self, what, offset=None, expected=None, actual=None):
        super().__init__(what)
        self.what = what
        self.offset = offset
        self.expected = expected
        self.actual = actual


class RemountFailed(Exception):
    pass


def first_difference(a, b):
    """Index of the first differing byte of two equal-length byte strings (or the shorter length)."""
    n = min(len(a), len(b))
    lo = 0
    step = 64 * KIB
    while lo < n:
        hi = min(n, lo + step)
        if a[lo:hi] != b[lo:hi]:
            for i in range(lo, hi):
                if a[i] != b[i]:
                    return i
        lo = hi
    return n


class Fsx:
    def __init__(self, args):
        self.a = args
        self.path = args.path
        self.seed = args.seed
        self.rng = random.Random(args.seed)
        self.cs = args.chunk_size
        self.max_size = args.max_size
        self.model = bytearray()
        # Data comes from a seeded pool at a random start, so each write differs from what it overwrites.
        self.pool = self.rng.randbytes(8 * MIB)
        self.history = collections.deque(maxlen=args.history)
        self.opnum = 0
        self.remounts = 0
        self.verifies = 0
        self.counts = collections.Counter()
        self.times = collections.Counter()
        self.fd = -1
        self.dfd = -1
        self.dbuf = mmap.mmap(-1, DIRECT_BUF)  # page-aligned anonymous memory for O_DIRECT
        self.dview = memoryview(self.dbuf)
        self.t0 = time.monotonic()
        weights = {
            "read": 14, "write": 16, "dread": 8, "dwrite": 10, "zwrite": 3,
            "mapread": 2, "mapwrite": 2, "fsync": 2, "fdatasync": 2,
            "punch": 5, "zero_keep": 3, "zero_ext": 3, "prealloc": 1,
            "truncate": 4, "truncate_regrow": 1.5, "seek": 6, "reopen": 1, "copy": 3,
            "open_trunc": 0.25, "mapwrite_ext": 1.5,
        }
        if args.no_direct:
            for k in ("dread", "dwrite"):
                weights.pop(k)
        if args.no_mmap:
            for k in ("mapread", "mapwrite", "mapwrite_ext"):
                weights.pop(k)
        for k in args.skip:
            if k not in weights:
                print("fsx: --skip %s: no such operation (operations: %s)" % (k, ", ".join(weights)), file=sys.stderr)
                raise SystemExit(2)
            weights.pop(k)
        self.op_names = list(weights)
        self.op_weights = [weights[k] for k in self.op_names]

    # ------------------------------------------------------------------------------------------------
    # bookkeeping

    @property
    def size(self):
        return len(self.model)

    def log(self, kind, off=None, length=None, note=""):
        self.history.append((self.opnum, kind, off, length, note, len(self.model)))

    def describe(self, entry):
        num, kind, off, length, note, size_after = entry
        s = "#%-7d %-12s" % (num, kind)
        if off is not None:
            s += " off=%s" % fmt(off)
        if length is not None:
            s += " len=%s end=%s" % (fmt(length), fmt(off + length) if off is not None else "")
        if note:
            s += " " + note
        return s + "  [size after %s]" % fmt(size_after)

    # ------------------------------------------------------------------------------------------------
    # descriptors

    def open_fds(self):
        self.fd = os.open(self.path, os.O_RDWR)
        if not self.a.no_direct:
            try:
                self.dfd = os.open(self.path, os.O_RDWR | O_DIRECT)
            except OSError as e:
                raise Mismatch("open(O_DIRECT) failed: %s" % e)

    def close_fds(self):
        for name in ("fd", "dfd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def any_fd(self):
        if self.dfd >= 0 and self.rng.random() < 0.5:
            return self.dfd, "direct fd"
        return self.fd, "buffered fd"

    # ------------------------------------------------------------------------------------------------
    # random ranges (drawn from the rng and the model size only, so a seed replays exactly)

    def rand_len(self, cap=3 * MIB):
        r = self.rng.random()
        if r < 0.35:
            n = self.rng.randint(1, 4 * KIB)
        elif r < 0.65:
            n = self.rng.randint(4 * KIB + 1, max(128 * KIB, self.cs // 8))
        elif r < 0.90:
            n = self.rng.randint(self.cs // 2, self.cs + self.cs // 2)
        else:
            n = self.rng.randint(self.cs, max(3 * self.cs, 2 * MIB))
        return max(1, min(n, cap, self.max_size))

    def boundary(self, limit):
        """A chunk boundary in [cs, limit] (at least cs)."""
        top = max(1, min(self.max_size, limit) // self.cs)
        return self.rng.randint(1, top) * self.cs

    def rand_range(self, align=1, cap=3 * MIB):
        n = self.rand_len(cap)
        r = self.rng.random()
        if r < 0.45:  # straddle (or touch) a chunk boundary
            b = self.boundary(self.size + self.cs)
            off = b - self.rng.randint(0, n)
        elif r < 0.80 and self.size > 0:
            off = self.rng.randint(0, self.size)
        else:
            off = self.rng.randint(0, self.max_size - 1)
        if align > 1:
            off -= off % align
            n = max(align, (n + align - 1) // align * align)
        off = max(0, off)
        if off + n > self.max_size:
            off = max(0, self.max_size - n)
            off -= off % align
        return off, n

    def rand_size(self):
        """A new size, any byte count (odd most of the time; a multiple of 512 or 4096 sometimes), often
        next to a chunk boundary or to the current size."""
        r = self.rng.random()
        if r < 0.30:
            s = self.boundary(self.max_size) + self.rng.randint(-8, 8) * 512
        elif r < 0.55:
            s = self.size + self.rng.randint(-128, 128) * 512
        elif r < 0.90:
            s = self.rng.randint(0, self.max_size)
        elif r < 0.95:
            s = self.rng.randint(0, 16) * 512
        else:
            s = self.max_size
        g = self.rng.random()
        if g < 0.15:
            s -= s % 512
        elif g < 0.25:
            s -= s % 4096
        elif g < 0.40:
            s += self.rng.choice((-1, 1))  # one byte either side of a sector or chunk boundary
        else:
            s += self.rng.randint(-4095, 4095)
        return max(0, min(s, self.max_size))

    def data(self, n):
        start = self.rng.randint(0, len(self.pool) - 1)
        if start + n <= len(self.pool):
            return self.pool[start:start + n]
        out = bytearray()
        while len(out) < n:
            take = min(n - len(out), len(self.pool) - start)
            out += self.pool[start:start + take]
            start = 0
        return bytes(out)

    # ------------------------------------------------------------------------------------------------
    # model updates

    def model_write(self, off, data):
        if off > self.size:
            self.model.extend(bytes(off - self.size))
        self.model[off:off + len(data)] = data

    def model_zero(self, off, n):
        end = min(self.size, off + n)
        if off < end:
            self.model[off:end] = bytes(end - off)

    def model_resize(self, n):
        if n < self.size:
            del self.model[n:]
        elif n > self.size:
            self.model.extend(bytes(n - self.size))

    # ------------------------------------------------------------------------------------------------
    # checks

    def check_bytes(self, what, off, actual, expected):
        if actual == expected:
            return
        i = first_difference(actual, expected)
        if i >= min(len(actual), len(expected)):
            raise Mismatch("%s: short or long result: got %d bytes, expected %d (file size in model %s)"
                           % (what, len(actual), len(expected), fmt(self.size)), off + i,
                           bytes(expected[i:i + 16]), bytes(actual[i:i + 16]))
        raise Mismatch(what + ": data differs", off + i, bytes(expected[i:i + 16]), bytes(actual[i:i + 16]))

    def check_size(self, what):
        st = os.fstat(self.fd)
        if st.st_size != self.size:
            raise Mismatch("%s: file size %s, model size %s" % (what, fmt(st.st_size), fmt(self.size)))
        return st

    def pread_all(self, fd, n, off):
        out = bytearray()
        while len(out) < n:
            b = os.pread(fd, n - len(out), off + len(out))
            if not b:
                break
            out += b
        return bytes(out)

    def dread_into(self, n, off, mem_off=0):
        """O_DIRECT read of n bytes (aligned) at off into the aligned buffer; returns the bytes read."""
        view = self.dview[mem_off:mem_off + n]
        got = os.preadv(self.dfd, [view], off)
        result = bytes(view[:got])
        view.release()
        return result

    def verify(self, why):
        """The whole file against the model: size, every byte (O_DIRECT), and the SEEK map."""
        self.verifies += 1
        self.check_size("verify (%s)" % why)
        step = 4 * MIB
        use_direct = self.dfd >= 0
        buffered_too = not use_direct or self.verifies % 3 == 0
        pos = 0
        while pos < self.size:
            n = min(step, self.size - pos)
            if use_direct:
                actual = self.dread_into((n + 4095) // 4096 * 4096, pos)
                self.check_bytes("verify (%s, O_DIRECT read at %s)" % (why, fmt(pos)), pos, actual,
                                 self.model[pos:pos + n])
            if buffered_too:
                actual = self.pread_all(self.fd, step, pos)
                self.check_bytes("verify (%s, buffered read at %s)" % (why, fmt(pos)), pos, actual,
                                 self.model[pos:pos + n])
            pos += n
        # Reading at and past EOF returns nothing.
        tail = os.pread(self.fd, 4096, self.size)
        if tail:
            raise Mismatch("verify (%s): read at EOF returned %d bytes" % (why, len(tail)), self.size)
        self.seek_walk(why)

    def seek_data(self, fd, off):
        try:
            return os.lseek(fd, off, SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return None
            raise Mismatch("lseek(%s, SEEK_DATA) failed: %s" % (fmt(off), e), off)

    def seek_hole(self, fd, off):
        try:
            return os.lseek(fd, off, SEEK_HOLE)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return None
            raise Mismatch("lseek(%s, SEEK_HOLE) failed: %s" % (fmt(off), e), off)

    def first_nonzero(self, start, end):
        """Offset of the first nonzero model byte in [start, end), or None."""
        end = min(end, self.size)
        pos = start
        while pos < end:
            n = min(len(ZEROS), end - pos)
            block = self.model[pos:pos + n]
            if block != ZEROS[:n]:
                return pos + n - len(block.lstrip(b"\0"))
            pos += n
        return None

    def check_seek(self, fd, off, what):
        size = self.size
        d = self.seek_data(fd, off)
        h = self.seek_hole(fd, off)
        if off >= size:
            if d is not None or h is not None:
                raise Mismatch("%s: SEEK_DATA/SEEK_HOLE at %s >= size %s returned %s/%s, expected ENXIO"
                               % (what, fmt(off), fmt(size), d, h), off)
            return
        if d is None:
            x = self.first_nonzero(off, size)
            if x is not None:
                raise Mismatch("%s: SEEK_DATA(%s) returned ENXIO but the model has data at %s"
                               % (what, fmt(off), fmt(x)), x, self.model[x:x + 16], "(SEEK_DATA said ENXIO: no data)")
        else:
            if not off <= d < size:
                raise Mismatch("%s: SEEK_DATA(%s) returned %s, outside [off, size %s)"
                               % (what, fmt(off), fmt(d), fmt(size)), off)
            x = self.first_nonzero(off, d)
            if x is not None:
                raise Mismatch("%s: SEEK_DATA(%s) returned %s, skipping model data at %s"
                               % (what, fmt(off), fmt(d), fmt(x)), x, self.model[x:x + 16], "(skipped by SEEK_DATA)")
        if h is None:
            raise Mismatch("%s: SEEK_HOLE(%s) returned ENXIO below the size %s" % (what, fmt(off), fmt(size)),
                           off)
        if not off <= h <= size:
            raise Mismatch("%s: SEEK_HOLE(%s) returned %s, outside [off, size %s]"
                           % (what, fmt(off), fmt(h), fmt(size)), off)
        if h < size:
            nd = self.seek_data(fd, h)
            if nd is not None and not h <= nd < size:
                raise Mismatch("%s: SEEK_DATA(%s) returned %s, outside [off, size %s)"
                               % (what, fmt(h), fmt(nd), fmt(size)), h)
            end = size if nd is None else nd
            x = self.first_nonzero(h, end)
            if x is not None:
                raise Mismatch("%s: SEEK_HOLE(%s) = %s and the next data is at %s, but the model has data at %s"
                               % (what, fmt(off), fmt(h), fmt(end), fmt(x)), x, self.model[x:x + 16],
                               "(inside a reported hole)")

    def seek_walk(self, why):
        """Walk the whole file data/hole/data/...: holes read as zeros in the model, no data skipped."""
        fd = self.fd
        pos = 0
        size = self.size
        steps = 0
        while pos < size:
            steps += 1
            if steps > 1_000_000:
                raise Mismatch("verify (%s): SEEK walk does not end" % why, pos)
            d = self.seek_data(fd, pos)
            end = size if d is None else d
            if d is not None and not pos <= d < size:
                raise Mismatch("verify (%s): SEEK_DATA(%s) returned %s (size %s)" % (why, fmt(pos), fmt(d),
                                                                                      fmt(size)), pos)
            x = self.first_nonzero(pos, end)
            if x is not None:
                raise Mismatch("verify (%s): SEEK_DATA(%s) returned %s, skipping model data at %s"
                               % (why, fmt(pos), "ENXIO" if d is None else fmt(d), fmt(x)), x,
                               self.model[x:x + 16], "(skipped by SEEK_DATA)")
            if d is None:
                break
            h = self.seek_hole(fd, d)
            if h is None or not d < h <= size:
                raise Mismatch("verify (%s): SEEK_HOLE(%s) returned %s (size %s)"
                               % (why, fmt(d), h, fmt(size)), d)
            pos = h

    def check_blocks(self, st, why):
        """st_blocks counts allocated chunks: never more than the chunks the size covers."""
        limit = (self.size + self.cs - 1) // self.cs * self.cs
        if st.st_blocks * 512 > limit:
            raise Mismatch("%s: st_blocks %d (%s bytes) exceeds the %s bytes of chunks that size %s covers"
                           % (why, st.st_blocks, fmt(st.st_blocks * 512), fmt(limit), fmt(self.size)))

    # ------------------------------------------------------------------------------------------------
    # operations

    def op_read(self):
        off, n = self.rand_range(cap=4 * MIB)
        if self.rng.random() < 0.15 and self.size > 0:  # reads that reach EOF or start past it
            off = max(0, self.size - self.rng.randint(0, 8 * KIB))
        self.log("read", off, n)
        actual = self.pread_all(self.fd, n, off)
        self.check_bytes("buffered read", off, actual, self.model[off:off + n])

    def op_write(self):
        off, n = self.rand_range()
        data = self.data(n)
        self.log("write", off, n)
        w = os.pwrite(self.fd, data, off)
        if w != n:
            raise Mismatch("buffered write of %d bytes at %s wrote %d" % (n, fmt(off), w), off)
        self.model_write(off, data)

    def direct_params(self):
        align = self.rng.choice((512, 4096))
        mem_off = 512 if align == 512 and self.rng.random() < 0.5 else 0
        off, n = self.rand_range(align=align, cap=4 * MIB)
        return align, mem_off, off, n

    def op_dread(self):
        align, mem_off, off, n = self.direct_params()
        if self.rng.random() < 0.15 and self.size > 0:
            off = max(0, self.size - self.rng.randint(0, 8 * KIB))
            off -= off % align
        self.log("dread", off, n, "align=%d mem+%d" % (align, mem_off))
        actual = self.dread_into(n, off, mem_off)
        self.check_bytes("O_DIRECT read (align %d)" % align, off, actual, self.model[off:off + n])

    def op_dwrite(self):
        align, mem_off, off, n = self.direct_params()
        data = self.data(n)
        self.log("dwrite", off, n, "align=%d mem+%d" % (align, mem_off))
        view = self.dview[mem_off:mem_off + n]
        view[:] = data
        w = os.pwritev(self.dfd, [view], off)
        view.release()
        if w != n:
            raise Mismatch("O_DIRECT write of %d bytes at %s wrote %d" % (n, fmt(off), w), off)
        self.model_write(off, data)

    def op_zwrite(self):
        r = self.rng.random()
        if r < 0.5:  # whole chunks of zeros: Tessera frees them
            off = self.boundary(self.size + self.cs) - self.cs
            n = self.cs * self.rng.randint(1, 2)
            if off + n > self.max_size:
                off = self.max_size - n
            data = bytes(n)
            note = "whole chunks of zeros"
        elif r < 0.8:  # data around one whole chunk of zeros
            off = self.boundary(self.size + self.cs) - self.cs
            head = self.rng.randint(1, 64 * KIB) if off >= 64 * KIB else 0
            tail = self.rng.randint(1, 64 * KIB)
            off -= head
            n = head + self.cs + tail
            if off + n > self.max_size:
                off, n, head = self.max_size - self.cs, self.cs, 0
            data = bytearray(self.data(n))
            data[head:head + self.cs] = bytes(self.cs)
            data = bytes(data)
            note = "one chunk of zeros at +%d" % head
        else:
            off, n = self.rand_range()
            data = bytes(n)
            note = "zeros"
        direct = self.dfd >= 0 and off % 4096 == 0 and n % 4096 == 0 and self.rng.random() < 0.5
        self.log("zwrite", off, n, note + (" (O_DIRECT)" if direct else ""))
        if direct:
            view = self.dview[0:n]
            view[:] = data
            w = os.pwritev(self.dfd, [view], off)
            view.release()
        else:
            w = os.pwrite(self.fd, data, off)
        if w != n:
            raise Mismatch("write of %d zero bytes at %s wrote %d" % (n, fmt(off), w), off)
        self.model_write(off, data)

    def op_copy(self):
        """copy_file_range inside the image (non-overlapping; Tessera turns source holes into holes)."""
        n = self.rand_len(cap=4 * MIB)
        if self.rng.random() < 0.5 and self.size > 0:
            src = self.rng.randint(0, self.size - 1)
        else:
            src = max(0, self.boundary(self.size + self.cs) - self.rng.randint(0, n))
        if self.rng.random() < 0.5:
            dst = max(0, self.boundary(self.size + self.cs) - self.rng.randint(0, n))
        else:
            dst = self.rng.randint(0, max(0, self.size + self.cs))
        dst = min(dst, self.max_size - n)
        if src < dst + n and dst < src + n:  # overlapping: the kernel refuses; move the target aside
            if src + 2 * n <= self.max_size:
                dst = src + n
            elif src >= n:
                dst = src - n
            elif src > 0:
                dst, n = 0, src
            else:
                n = min(n, self.max_size // 2)
                dst = n
        fd_in, which_in = self.any_fd()
        fd_out, which_out = self.any_fd()
        self.log("copy", dst, n, "from %s (%s -> %s)" % (fmt(src), which_in, which_out))
        expected = 0 if src >= self.size else min(n, self.size - src)
        try:
            got = os.copy_file_range(fd_in, fd_out, n, src, dst)
        except OSError as e:
            raise Mismatch("copy_file_range(%s -> %s, %s) failed: %s" % (fmt(src), fmt(dst), fmt(n), e), dst)
        if got != expected:
            raise Mismatch("copy_file_range(%s -> %s, %s) copied %d bytes, expected %d (size %s)"
                           % (fmt(src), fmt(dst), fmt(n), got, expected, fmt(self.size)), dst)
        if got:
            self.model_write(dst, bytes(self.model[src:src + got]))

    def map_range(self):
        """A range inside the file, as (page-aligned map offset, map length, off, n)."""
        off = self.rng.randint(0, self.size - 1)
        n = min(self.rng.randint(1, 2 * self.cs), self.size - off)
        base = off - off % mmap.PAGESIZE
        return base, off + n - base, off, n

    def op_mapread(self):
        if self.size == 0:
            self.log("mapread", note="(skipped: empty file)")
            return
        base, mlen, off, n = self.map_range()
        self.log("mapread", off, n)
        with mmap.mmap(self.fd, mlen, mmap.MAP_SHARED, mmap.PROT_READ, offset=base) as m:
            actual = m[off - base:off - base + n]
        self.check_bytes("mmap read", off, actual, self.model[off:off + n])

    def op_mapwrite(self):
        if self.size == 0:
            self.log("mapwrite", note="(skipped: empty file)")
            return
        base, mlen, off, n = self.map_range()
        data = self.data(n)
        self.log("mapwrite", off, n, "msync")
        with mmap.mmap(self.fd, mlen, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=base) as m:
            m[off - base:off - base + n] = data
            m.flush()
        self.model_write(off, data)

    def op_mapwrite_ext(self):
        """mmap write past the old EOF: ftruncate up to any byte size, then write (part of) the new range
        through a shared mapping, up to the new EOF at most (past it, a page's bytes are not the file's)."""
        old = self.size
        new = min(self.max_size, old + self.rng.randint(1, 2 * self.cs))
        if new <= old:
            self.log("mapwrite_ext", note="(skipped: at the maximum size)")
            return
        if self.rng.random() < 0.8 and new % 512 == 0 and new > old + 1:
            new -= 1
        off = max(0, old - self.rng.randint(0, 8 * KIB)) if self.rng.random() < 0.5 else self.rng.randint(old, new - 1)
        end = new if self.rng.random() < 0.5 else self.rng.randint(off + 1, new)
        n = end - off
        base = off - off % mmap.PAGESIZE
        data = self.data(n)
        self.log("mapwrite_ext", off, n, "ftruncate %s -> %s, mmap write, msync" % (fmt(old), fmt(new)))
        try:
            os.ftruncate(self.fd, new)
        except OSError as e:
            raise Mismatch("ftruncate up to %s failed: %s" % (fmt(new), e), new)
        self.model_resize(new)
        try:
            with mmap.mmap(self.fd, new - base, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=base) as m:
                m[off - base:off - base + n] = data
                m.flush()
        except OSError as e:
            raise Mismatch("mmap write of %s bytes at %s past the old EOF %s failed: %s"
                           % (fmt(n), fmt(off), fmt(old), e), off)
        self.model_write(off, data)
        self.check_size("after an mmap write past the old EOF")
        lo = max(0, off - 4 * KIB)
        if self.dfd >= 0:  # what the daemon holds, not the page cache
            dlo = lo - lo % 4096
            cnt = (self.size - dlo + 4095) // 4096 * 4096
            cnt = min(cnt, DIRECT_BUF - 8192)
            actual = self.dread_into(cnt, dlo)
            self.check_bytes("O_DIRECT read after an mmap write past EOF", dlo, actual, self.model[dlo:dlo + cnt])

    def op_fsync(self):
        fd, which = self.any_fd()
        self.log("fsync", note=which)
        os.fsync(fd)

    def op_fdatasync(self):
        fd, which = self.any_fd()
        self.log("fdatasync", note=which)
        os.fdatasync(fd)

    def falloc(self, kind, mode, off, n):
        fd, which = self.any_fd()
        self.log(kind, off, n, which)
        try:
            fallocate(fd, mode, off, n)
        except OSError as e:
            raise Mismatch("fallocate(mode 0x%x, %s, %s) failed: %s" % (mode, fmt(off), fmt(n), e), off)

    def op_punch(self):
        off, n = self.rand_range(cap=4 * MIB)
        self.falloc("punch", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, n)
        self.model_zero(off, n)

    def op_zero_keep(self):
        off, n = self.rand_range(cap=4 * MIB)
        self.falloc("zero_keep", FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, n)
        self.model_zero(off, n)

    def op_zero_ext(self):
        off, n = self.rand_range(cap=4 * MIB)
        self.falloc("zero_ext", FALLOC_FL_ZERO_RANGE, off, n)
        self.model_zero(off, n)
        if off + n > self.size:
            self.model_resize(off + n)

    def op_prealloc(self):
        off, n = self.rand_range(cap=4 * MIB)
        self.falloc("prealloc", 0, off, n)
        if off + n > self.size:
            self.model_resize(off + n)

    def op_truncate(self):
        s = self.rand_size()
        by_path = self.rng.random() < 0.2
        self.log("truncate", s, None, "truncate(2) by path" if by_path else "ftruncate")
        try:
            if by_path:
                os.truncate(self.path, s)
            else:
                os.ftruncate(self.fd, s)
        except OSError as e:
            raise Mismatch("truncate to %s failed: %s" % (fmt(s), e), s)
        self.model_resize(s)
        self.check_size("after truncate")

    def op_truncate_regrow(self):
        """Cut inside a chunk that holds data at an odd offset, grow again: the cut-off bytes read zeros."""
        if self.size == 0:
            self.log("truncate_regrow", note="(skipped: empty file)")
            return
        cut = self.rng.randint(0, self.size - 1)
        if cut % 512 == 0:
            cut += 1 if cut + 1 < self.size else 0
        how = self.rng.choice(("truncate", "write", "prealloc", "zero_ext"))
        grow_to = min(self.max_size, max(cut + 1, self.size + self.rng.randint(-self.cs, 2 * self.cs)))
        fd, which = self.any_fd() if how != "truncate" else (self.fd, "buffered fd")
        self.log("truncate_regrow", cut, grow_to - cut, "cut at %s, grow to %s by %s (%s)"
                 % (fmt(cut), fmt(grow_to), how, which))
        try:
            os.ftruncate(self.fd, cut)
        except OSError as e:
            raise Mismatch("ftruncate to %s failed: %s" % (fmt(cut), e), cut)
        self.model_resize(cut)
        self.check_size("after the cut")
        try:
            if how == "truncate":
                os.ftruncate(self.fd, grow_to)
                self.model_resize(grow_to)
            elif how == "write":  # one byte at the new end; the gap must read zeros
                b = self.data(1)
                if os.pwrite(self.fd, b, grow_to - 1) != 1:
                    raise Mismatch("write of 1 byte at %s was short" % fmt(grow_to - 1), grow_to - 1)
                self.model_write(grow_to - 1, b)
            elif how == "prealloc":
                fallocate(fd, 0, cut, grow_to - cut)
                self.model_resize(grow_to)
            else:
                fallocate(fd, FALLOC_FL_ZERO_RANGE, cut, grow_to - cut)
                self.model_resize(grow_to)
        except OSError as e:
            raise Mismatch("growing from %s to %s by %s failed: %s" % (fmt(cut), fmt(grow_to), how, e), cut)
        self.check_size("after growing again")
        # The whole chunk around the cut, through both descriptors (the daemon answers O_DIRECT).
        lo = cut - cut % self.cs
        hi = min(self.size, lo + self.cs + 8 * KIB)
        actual = self.pread_all(self.fd, hi - lo, lo)
        self.check_bytes("buffered read around a regrown cut", lo, actual, self.model[lo:hi])
        if self.dfd >= 0:
            dlo = lo - lo % 4096
            n = (hi - dlo + 4095) // 4096 * 4096
            actual = self.dread_into(n, dlo)
            self.check_bytes("O_DIRECT read around a regrown cut", dlo, actual, self.model[dlo:dlo + n])

    def op_seek(self):
        r = self.rng.random()
        if r < 0.4:
            off = self.boundary(self.size + self.cs) + self.rng.randint(-2, 2) * 512
        elif r < 0.9:
            off = self.rng.randint(0, self.size + 4096)
        else:
            off = self.rng.randint(0, self.max_size)
        off = max(0, off)
        fd, which = self.any_fd()
        self.log("seek", off, None, which)
        self.check_seek(fd, off, "seek")

    def op_reopen(self):
        self.log("reopen")
        self.close_fds()
        self.open_fds()
        self.check_size("after reopen")

    def op_open_trunc(self):
        """Close, open(O_TRUNC) (the kernel passes O_TRUNC to the filesystem: atomic_o_trunc), reopen."""
        self.log("open_trunc", note="open(O_RDWR|O_TRUNC): size must become 0")
        self.close_fds()
        fd = os.open(self.path, os.O_RDWR | os.O_TRUNC)
        self.model_resize(0)
        self.fd = fd
        self.check_size("right after open(O_TRUNC)")
        os.close(fd)
        self.fd = -1
        self.open_fds()
        self.check_size("after open(O_TRUNC) and reopen")

    def remount(self):
        self.remounts += 1
        sync = self.remounts % 2 == 1
        self.log("remount", note="fsync first" if sync else "close only (clean unmount flushes)")
        if sync:
            os.fsync(self.fd)
        self.close_fds()
        # bash, not sh: dash drops exported bash functions, which test scripts use as callbacks.
        r = subprocess.run(self.a.remount_cmd, shell=True, executable=shutil.which("bash") or "/bin/sh",
                           stdout=sys.stderr)
        if r.returncode != 0:
            raise RemountFailed("remount command failed (exit %d): %s" % (r.returncode, self.a.remount_cmd))
        try:
            self.open_fds()
        except OSError as e:
            raise Mismatch("cannot open %s after remount: %s" % (self.path, e))
        st = self.check_size("after remount")
        self.check_blocks(st, "after remount")
        self.verify("after remount %d" % self.remounts)

    # ------------------------------------------------------------------------------------------------

    def report(self, m):
        p = sys.stderr.write
        p("\n=== fsx MISMATCH (seed %d) at operation %d ===\n" % (self.seed, self.opnum))
        p("%s\n" % m.what)
        if m.offset is not None:
            p("first differing offset: %s (chunk %d, +%s in chunk)\n"
              % (fmt(m.offset), m.offset // self.cs, fmt(m.offset % self.cs)))
        if m.expected is not None or m.actual is not None:
            p("expected (model): %s\n" % (m.expected.hex(" ") if isinstance(m.expected, (bytes, bytearray))
                                          else m.expected))
            p("actual (file):    %s\n" % (m.actual.hex(" ") if isinstance(m.actual, (bytes, bytearray))
                                          else m.actual))
        p("model size %s\n" % fmt(self.size))
        p("last %d operations (the last one failed):\n" % min(20, len(self.history)))
        for e in list(self.history)[-20:]:
            p("  %s\n" % self.describe(e))
        if m.offset is not None:
            touched = []
            for e in list(reversed(self.history))[1:]:
                num, kind, off, length, _, _ = e
                if kind in ("truncate", "truncate_regrow", "mapwrite_ext", "open_trunc", "remount", "reopen"):
                    touched.append(e)  # size changes and remounts matter anywhere
                elif off is not None and length is not None and off <= m.offset < off + length:
                    touched.append(e)
                if len(touched) >= 8:
                    break
            if touched:
                p("earlier operations that covered offset %s (or changed the size / remounted), newest first:\n"
                  % fmt(m.offset))
                for e in touched:
                    p("  %s\n" % self.describe(e))
        p("replay: %s\n" % self.replay_cmd())

    def replay_cmd(self):
        a = self.a
        cmd = "python3 %s %s --seed %d --ops %d --max-size %d --chunk-size %d --verify-every %d" % (
            sys.argv[0], a.path, self.seed, self.opnum, a.max_size, a.chunk_size, a.verify_every)
        if a.remount_cmd:
            cmd += " --remount-every %d --remount-cmd '%s'" % (a.remount_every, a.remount_cmd)
        if a.no_direct:
            cmd += " --no-direct"
        if a.no_mmap:
            cmd += " --no-mmap"
        if a.skip:
            cmd += " --skip " + ",".join(a.skip)
        return cmd

    def run(self):
        a = self.a
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self.open_fds()
        os.ftruncate(self.fd, 0)
        self.check_size("start")
        deadline = a.deadline if a.deadline else (time.time() + a.max_seconds if a.max_seconds else None)
        next_remount = a.remount_every if a.remount_cmd else None
        done = 0
        while done < a.ops:
            if deadline is not None and time.time() >= deadline:
                break
            self.opnum += 1
            name = self.rng.choices(self.op_names, self.op_weights)[0]
            self.counts[name] += 1
            t = time.monotonic()
            getattr(self, "op_" + name)()
            self.times[name] += time.monotonic() - t
            done += 1
            if next_remount is not None and done >= next_remount and done < a.ops:
                self.opnum += 1
                t = time.monotonic()
                self.remount()
                self.times["(remount)"] += time.monotonic() - t
                next_remount += a.remount_every
            if a.verify_every and done % a.verify_every == 0:
                t = time.monotonic()
                self.verify("every %d ops" % a.verify_every)
                self.times["(verify)"] += time.monotonic() - t
            if a.progress and done % a.progress == 0:
                print("fsx: seed %d: %d ops, size %s, %d remounts, %.1fs"
                      % (self.seed, done, fmt(self.size), self.remounts, time.monotonic() - self.t0),
                      file=sys.stderr, flush=True)
        self.verify("final")
        os.fsync(self.fd)
        self.close_fds()
        return done


def main():
    p = argparse.ArgumentParser(description="fsx-style model checker of one Tessera image file")
    p.add_argument("path", help="the image file (created if missing, truncated to 0 at the start)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--ops", type=int, default=10000)
    p.add_argument("--max-size", type=parse_size, default=64 * MIB)
    p.add_argument("--chunk-size", type=parse_size, default=1 * MIB)
    p.add_argument("--verify-every", type=int, default=2000, help="full verify every N ops (0: only at the end)")
    p.add_argument("--remount-cmd", default=None, help="command (run by bash) that unmounts and mounts again")
    p.add_argument("--remount-every", type=int, default=2500)
    p.add_argument("--no-direct", action="store_true", help="no O_DIRECT operations")
    p.add_argument("--no-mmap", action="store_true", help="no mmap operations")
    p.add_argument("--skip", type=lambda t: [k for k in t.split(",") if k], default=[],
                   help="operations to leave out, comma-separated (to narrow down a failure; e.g. open_trunc)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop early (cleanly) after this long")
    p.add_argument("--deadline", type=float, default=None, help="stop early at this epoch time")
    p.add_argument("--progress", type=int, default=0, help="print progress every N ops")
    p.add_argument("--timing", action="store_true", help="print the time spent per kind of operation")
    p.add_argument("--history", type=int, default=100000, help="operations kept for the mismatch report")
    p.add_argument("--delete", action="store_true", help="unlink the image at the end (when all matched)")
    a = p.parse_args()
    if a.seed is None:
        a.seed = random.SystemRandom().randint(1, 2**31 - 1)
    if a.max_size % 4096 or a.max_size < 4 * a.chunk_size:
        p.error("--max-size must be a multiple of 4096 and at least 4 chunks")
    if a.remount_every <= 0:
        p.error("--remount-every must be > 0")
    print("fsx: seed %d, %d ops, max size %s, chunk %s, file %s%s"
          % (a.seed, a.ops, fmt(a.max_size), fmt(a.chunk_size), a.path,
             ", remount every %d ops" % a.remount_every if a.remount_cmd else ""), flush=True)
    f = Fsx(a)
    rc = 0
    done = 0
    try:
        done = f.run()
    except Mismatch as m:
        f.report(m)
        rc = 1
    except RemountFailed as e:
        print("fsx: seed %d: %s (after operation %d)" % (a.seed, e, f.opnum), file=sys.stderr)
        rc = 3
    except OSError as e:
        f.report(Mismatch("operation failed unexpectedly: %s" % e))
        rc = 1
    except Exception:  # a bug in fsx itself: say so, with the seed
        import traceback
        traceback.print_exc()
        print("fsx: seed %d: internal error at operation %d (a bug in fsx, not a mismatch)" % (a.seed, f.opnum),
              file=sys.stderr)
        rc = 2
    if rc != 0:
        done = f.opnum
    elif a.delete:
        os.unlink(a.path)
    secs = time.monotonic() - f.t0
    if rc == 0:
        print("fsx: seed %d: %d operations checked, %d remounts, %d full verifies in %.1fs (%s)"
              % (a.seed, done, f.remounts, f.verifies, secs,
                 ", ".join("%s %d" % kv for kv in sorted(f.counts.items()))))
    if a.timing:
        print("fsx: seconds per kind: %s" % ", ".join("%s %.1f" % kv for kv in f.times.most_common()),
              file=sys.stderr)
    print("fsx-result: seed=%d ops=%d remounts=%d mismatches=%d seconds=%.1f"
          % (a.seed, done, f.remounts, 1 if rc == 1 else 0, secs), flush=True)
    sys.exit(rc)


if __name__ == "__main__":
    main()
