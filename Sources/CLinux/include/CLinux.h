// Linux calls that Glibc's Swift module does not import without _GNU_SOURCE.
#ifndef TESSERA_CLINUX_H
#define TESSERA_CLINUX_H
#include <sys/types.h>

int tessera_punch_hole(int fd, off_t offset, off_t length);
/// fallocate(FALLOC_FL_ZERO_RANGE): the range reads as zeros and stays allocated (on a block device the
/// kernel writes zeros itself when the device cannot). -1 and errno on failure.
int tessera_zero_range(int fd, off_t offset, off_t length);
/// fallocate(mode 0): allocate (and extend to) the range; reads of new space return zeros.
int tessera_allocate(int fd, off_t offset, off_t length);
/// ioctl(BLKGETSIZE64): the size in bytes of the block device open on `fd`. -1 and errno on failure.
int tessera_block_device_size(int fd, unsigned long long *size);
#include <stdint.h>
#include <stddef.h>
#include <sys/xattr.h>
/// CRC32C (Castagnoli) of `len` bytes, continuing from `crc` (start with 0). SSE4.2 when the CPU has it.
uint32_t tessera_crc32c(uint32_t crc, const void *buf, size_t len);
/// systemd's readiness protocol: sends STATE (e.g. "READY=1") as one datagram to $NOTIFY_SOCKET (a path,
/// or an abstract name starting with '@'). 0 when sent, 1 when not run by systemd, -1 and errno on failure.
int tessera_sd_notify(const char *state);
/// Linux constants the Swift Glibc module does not export (they need _GNU_SOURCE or linux/falloc.h),
/// taken from the system headers here rather than written out in Swift.
extern const int tessera_O_DIRECT;
extern const int tessera_SEEK_DATA;
extern const int tessera_SEEK_HOLE;
extern const unsigned int tessera_RENAME_NOREPLACE;
extern const unsigned int tessera_RENAME_EXCHANGE;
extern const int tessera_FALLOC_FL_KEEP_SIZE;
extern const int tessera_FALLOC_FL_PUNCH_HOLE;
extern const int tessera_FALLOC_FL_ZERO_RANGE;
#endif
