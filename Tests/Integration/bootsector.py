#!/usr/bin/env python3
"""A 512-byte x86 boot sector for the guest tests, assembled by hand.

The guest (real mode, SeaBIOS) uses the INT 13h extensions (EDD, LBA addressing):
  1. reads COUNT sectors at LBA SRC into memory,
  2. XORs every byte with 0x5A,
  3. writes them to LBA DST,
  4. reads LBA DST back into another buffer and compares,
  5. reports through isa-debug-exit (port 0xF4): value 0x10 on success (qemu exits with status 0x21 = 33),
     value 0x01 on any BIOS error or mismatch (qemu exits with status 3). It also prints "OK"/"ER" on COM1.

usage: bootsector.py OUT [--src LBA] [--dst LBA] [--count N]     (N <= 32: one 16 KiB buffer each, at 0x8000 and 0xC000)
       bootsector.py expect IMAGE [--src LBA] [--dst LBA] [--count N]  (host check: DST == SRC ^ 0x5A)
"""

import argparse
import struct
import sys

BUF_A = 0x8000  # offsets with DS = ES = 0: after the boot sector (0x7C00) and its stack
BUF_B = 0xC000


def assemble(src, dst, count):
    code = []      # list of bytes or ("rel8", label) or ("abs16", label)
    labels = {}

    def emit(*xs):
        code.extend(xs)

    def label(name):
        labels[name] = sum(1 if isinstance(x, int) else (1 if x[0] == "rel8" else 2) for x in code)

    def imm16(v):
        return [v & 0xFF, (v >> 8) & 0xFF]

    nbytes = count * 512
    label("start")
    emit(0xFA)                          # cli
    emit(0x31, 0xC0)                    # xor ax,ax
    emit(0x8E, 0xD8)                    # mov ds,ax
    emit(0x8E, 0xC0)                    # mov es,ax
    emit(0x8E, 0xD0)                    # mov ss,ax
    emit(0xBC, *imm16(0x7C00))          # mov sp,0x7c00
    emit(0xFB)                          # sti
    emit(0xFC)                          # cld
    emit(0x88, 0x16, ("abs16", "drive"))  # mov [drive],dl
    # serial init is left to the BIOS defaults (SeaBIOS sets COM1 up)
    # 1. extended read SRC -> BUF_A
    emit(0xBE, ("abs16", "dap_read"))   # mov si,dap_read
    emit(0xB4, 0x42)                    # mov ah,0x42
    emit(0x8A, 0x16, ("abs16", "drive"))  # mov dl,[drive]
    emit(0xCD, 0x13)                    # int 0x13
    emit(0x72, ("rel8", "fail"))        # jc fail
    # 2. xor
    emit(0xBE, *imm16(BUF_A))           # mov si,BUF_A
    emit(0xB9, *imm16(nbytes))          # mov cx,nbytes
    label("xorloop")
    emit(0x80, 0x34, 0x5A)              # xor byte [si],0x5a
    emit(0x46)                          # inc si
    emit(0xE2, ("rel8", "xorloop"))     # loop xorloop
    # 3. extended write BUF_A -> DST
    emit(0xBE, ("abs16", "dap_write"))  # mov si,dap_write
    emit(0xB8, *imm16(0x4300))          # mov ax,0x4300
    emit(0x8A, 0x16, ("abs16", "drive"))
    emit(0xCD, 0x13)
    emit(0x72, ("rel8", "fail"))
    # 4. read back DST -> BUF_B, compare with BUF_A
    emit(0xBE, ("abs16", "dap_check"))
    emit(0xB4, 0x42)
    emit(0x8A, 0x16, ("abs16", "drive"))
    emit(0xCD, 0x13)
    emit(0x72, ("rel8", "fail"))
    emit(0xBE, *imm16(BUF_A))           # mov si,BUF_A
    emit(0xBF, *imm16(BUF_B))           # mov di,BUF_B
    emit(0xB9, *imm16(nbytes))          # mov cx,nbytes
    emit(0xF3, 0xA6)                    # repe cmpsb
    emit(0x75, ("rel8", "fail"))        # jne fail
    # 5. success
    emit(0xB0, ord("O"))                # mov al,'O'
    emit(0xBA, *imm16(0x3F8))           # mov dx,0x3f8
    emit(0xEE)                          # out dx,al
    emit(0xB0, ord("K"))
    emit(0xEE)
    emit(0xB0, 0x10)                    # mov al,0x10
    emit(0xEB, ("rel8", "exit"))        # jmp exit
    label("fail")
    emit(0xB0, ord("E"))
    emit(0xBA, *imm16(0x3F8))
    emit(0xEE)
    emit(0xB0, ord("R"))
    emit(0xEE)
    emit(0xB0, 0x01)                    # mov al,1
    label("exit")
    emit(0xE6, 0xF4)                    # out 0xf4,al
    label("hang")
    emit(0xF4)                          # hlt
    emit(0xEB, ("rel8", "hang"))        # jmp hang
    label("drive")
    emit(0x80)

    def dap(buf, lba):
        return [0x10, 0x00, *struct.pack("<HHHQ", count, buf, 0, lba)]

    label("dap_read")
    emit(*dap(BUF_A, src))
    label("dap_write")
    emit(*dap(BUF_A, dst))
    label("dap_check")
    emit(*dap(BUF_B, dst))

    out = bytearray()
    for x in code:
        if isinstance(x, int):
            out.append(x)
        elif x[0] == "rel8":
            rel = labels[x[1]] - (len(out) + 1)
            assert -128 <= rel <= 127, x
            out.append(rel & 0xFF)
        else:
            out += struct.pack("<H", 0x7C00 + labels[x[1]])
    assert len(out) <= 510, len(out)
    out += bytes(510 - len(out)) + b"\x55\xAA"
    return bytes(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", help="OUT file for the boot sector, or 'expect'")
    ap.add_argument("image", nargs="?")
    ap.add_argument("--src", type=int, default=2049)      # 1 MiB + 512
    ap.add_argument("--dst", type=int, default=6136)      # 3 MiB - 4 KiB: crosses a 1 MiB boundary
    ap.add_argument("--count", type=int, default=16)
    a = ap.parse_args()
    if not 1 <= a.count <= 32:
        sys.exit("count must be 1..32")
    if a.what == "expect":
        with open(a.image, "rb") as f:
            f.seek(a.src * 512)
            src = f.read(a.count * 512)
            f.seek(a.dst * 512)
            dst = f.read(a.count * 512)
        want = bytes(b ^ 0x5A for b in src)
        if dst != want:
            bad = next(i for i in range(len(want)) if i >= len(dst) or dst[i] != want[i])
            sys.exit(f"guest's write is not in the image: first difference at byte {bad} of LBA {a.dst}")
        if src.count(0) == len(src):
            sys.exit("source range is all zeros (the test did not seed it)")
        print("guest write found in the image")
        return 0
    with open(a.what, "wb") as f:
        f.write(assemble(a.src, a.dst, a.count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
