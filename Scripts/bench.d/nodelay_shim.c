/*
 * nodelay_shim.c: LD_PRELOAD library for Scripts/bench's s3backer-local target.
 *
 * Debian 12's s3backer 1.5.4 simulates S3 latency in --test mode: its local
 * backend (test_io.c) sleeps a random 0-199 ms with usleep() before every
 * block read and write, which caps it at about 10 IOPS.  s3backer 1.5.4 calls
 * usleep() nowhere else, so making usleep() return at once leaves a plain
 * local-directory block store behind the same FUSE, cache and block layers.
 *
 * Only for benchmarking: do not preload into anything that relies on sleeps.
 * Build: gcc -O2 -shared -fPIC -o nodelay_shim.so nodelay_shim.c
 */
#include <unistd.h>

int usleep(useconds_t usec)
{
    (void)usec;
    return 0;
}
