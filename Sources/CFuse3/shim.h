// C shim over libfuse3's low-level API. Debian 12 ships libfuse 3.14: FUSE_USE_VERSION 312 selects
// the 3.12 loop-config API. Macros and bitfield-heavy calls that Swift cannot import are wrapped here.
#ifndef TESSERA_CFUSE3_SHIM_H
#define TESSERA_CFUSE3_SHIM_H

#define FUSE_USE_VERSION 312
#include <fuse3/fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/mount.h>
#include <sys/xattr.h>
#include <fcntl.h>
#include <errno.h>
#include <string.h>
#include <stdlib.h>

// fuse_session_loop_mt is a macro over the versioned symbol. max_threads bounds the workers (libfuse's
// own default is 10); max_idle how many stay when idle.
static inline int tessera_session_loop_mt(struct fuse_session *se, unsigned int max_threads, unsigned int max_idle,
                                          int clone_fd) {
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    if (cfg == NULL) return -ENOMEM;
    fuse_loop_cfg_set_clone_fd(cfg, clone_fd);
    fuse_loop_cfg_set_max_threads(cfg, max_threads);
    fuse_loop_cfg_set_idle_threads(cfg, max_idle);
    int rc = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    return rc;
}

// fuse_session_new is versioned as a macro too.
static inline struct fuse_session *tessera_session_new(struct fuse_args *args,
        const struct fuse_lowlevel_ops *ops, void *userdata) {
    return fuse_session_new(args, ops, sizeof(*ops), userdata);
}

// Capabilities are negotiated in init; each one is explained where it is set.
static inline void tessera_conn_setup(struct fuse_conn_info *conn, unsigned max_write) {
    // Large requests: 1 MiB writes where the kernel allows (it caps max_pages itself).
    conn->max_write = max_write;
    conn->max_read = 0;
    conn->max_readahead = max_write;
    // Asynchronous requests (async direct I/O, read-ahead) in flight at once, over the whole mount:
    // the kernel's default of 12 would let one volume whose requests wait under a QoS cap hold every
    // slot and stall the other volumes; 256 leaves room for many queues of depth 16 or more.
    conn->max_background = 256;
    conn->congestion_threshold = 192;
    // Async direct I/O keeps queue depth for O_DIRECT clients (qemu cache=none).
    if (conn->capable & FUSE_CAP_ASYNC_DIO) conn->want |= FUSE_CAP_ASYNC_DIO;
    if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
    // Concurrent reads/writes on one inode: the engine locks per chunk, not per file.
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    // No writeback cache: every write reaches the daemon before write(2) returns, which keeps
    // the fsync contract simple (a flush covers everything acknowledged).
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    // Splice adds copies for our chunked I/O; plain buffers go straight to pread/pwrite.
    conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
    // POSIX locks are handled by the kernel (qemu takes OFD locks).
    conn->want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
}

static inline void tessera_fi_set_direct_io(struct fuse_file_info *fi, int on) { fi->direct_io = on ? 1 : 0; }
static inline void tessera_fi_set_keep_cache(struct fuse_file_info *fi, int on) { fi->keep_cache = on ? 1 : 0; }
static inline void tessera_fi_set_nonseekable(struct fuse_file_info *fi, int on) { fi->nonseekable = on ? 1 : 0; }

static inline struct fuse_args tessera_args_init(int argc, char **argv) {
    struct fuse_args a = FUSE_ARGS_INIT(argc, argv);
    return a;
}

#endif
