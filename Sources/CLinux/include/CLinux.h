// Linux calls that Glibc's Swift module does not import without _GNU_SOURCE.
#ifndef TESSERA_CLINUX_H
#define TESSERA_CLINUX_H
#include <sys/types.h>

int tessera_punch_hole(int fd, off_t offset, off_t length);
int tessera_fdatasync(int fd);
#endif
