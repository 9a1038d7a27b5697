// Linux calls that Glibc's Swift module does not import without _GNU_SOURCE.
#ifndef TESSERA_CLINUX_H
#define TESSERA_CLINUX_H
#include <sys/types.h>

int tessera_punch_hole(int fd, off_t offset, off_t length);
#include <stdint.h>
#include <stddef.h>
#include <sys/xattr.h>
/// CRC32C (Castagnoli) of `len` bytes, continuing from `crc` (start with 0). SSE4.2 when the CPU has it.
uint32_t tessera_crc32c(uint32_t crc, const void *buf, size_t len);
#endif
