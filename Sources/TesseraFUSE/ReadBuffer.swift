#if canImport(Glibc)
    import Glibc
#endif

/// One page-aligned read buffer per FUSE worker thread, kept for the thread's life, so a read allocates
/// nothing: libfuse's workers are long-lived and each handles one request at a time. A request larger
/// than the buffer (the kernel caps reads at `max_read`, 1 MiB here) gets a buffer of its own.
enum ReadBuffer {
    static let capacity = 1 << 20

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        // The destructor frees the thread's buffer when the worker exits.
        let rc = pthread_key_create(&key) { free($0) }
        precondition(rc == 0, "pthread_key_create failed: \(rc)")
        return key
    }()

    /// Runs `body` with a buffer of exactly `size` bytes, valid only during the call.
    static func with<R, E: Error>(_ size: Int, _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        guard size <= capacity else {
            let own = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 4096)
            defer { own.deallocate() }
            return try body(own)
        }
        var base = pthread_getspecific(key)
        if base == nil {
            var p: UnsafeMutableRawPointer?
            precondition(posix_memalign(&p, 4096, capacity) == 0, "cannot allocate a read buffer")
            pthread_setspecific(key, p)
            base = p
        }
        return try body(UnsafeMutableRawBufferPointer(start: base, count: size))
    }
}
