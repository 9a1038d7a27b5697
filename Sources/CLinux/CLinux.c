#define _GNU_SOURCE
#include <fcntl.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include "CLinux.h"

int tessera_punch_hole(int fd, off_t offset, off_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

int tessera_zero_range(int fd, off_t offset, off_t length) {
    return fallocate(fd, FALLOC_FL_ZERO_RANGE, offset, length);
}

int tessera_allocate(int fd, off_t offset, off_t length) {
    return fallocate(fd, 0, offset, length);
}

int tessera_block_device_size(int fd, unsigned long long *size) {
    uint64_t bytes = 0;
    if (ioctl(fd, BLKGETSIZE64, &bytes) != 0) return -1;
    *size = bytes;
    return 0;
}
