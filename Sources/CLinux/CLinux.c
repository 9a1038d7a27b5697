#define _GNU_SOURCE
#include <fcntl.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <linux/falloc.h>
#include <stdio.h>
#include "CLinux.h"

const int tessera_O_DIRECT = O_DIRECT;
const int tessera_SEEK_DATA = SEEK_DATA;
const int tessera_SEEK_HOLE = SEEK_HOLE;
const unsigned int tessera_RENAME_NOREPLACE = RENAME_NOREPLACE;
const unsigned int tessera_RENAME_EXCHANGE = RENAME_EXCHANGE;
const int tessera_FALLOC_FL_KEEP_SIZE = FALLOC_FL_KEEP_SIZE;
const int tessera_FALLOC_FL_PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE;
const int tessera_FALLOC_FL_ZERO_RANGE = FALLOC_FL_ZERO_RANGE;

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

int tessera_sd_notify(const char *state) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || path[0] == '\0') return 1;
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    size_t len = strlen(path);
    if (len >= sizeof addr.sun_path) { errno = ENAMETOOLONG; return -1; }
    memcpy(addr.sun_path, path, len);
    if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&addr,
                       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
    int saved = errno;
    close(fd);
    errno = saved;
    return n < 0 ? -1 : 0;
}
