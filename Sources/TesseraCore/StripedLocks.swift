#if canImport(Glibc)
    import Glibc
#endif

/// Reader-writer locks striped by chunk index: I/O on a chunk holds its stripe shared; changing what
/// the chunk maps to (allocate, free) holds it exclusive. Stripes, not one lock per chunk, keep memory
/// flat for huge volumes; 64 stripes keep false sharing rare at queue depth 16.
///
/// `@unchecked Sendable`: the pthread locks live at stable heap addresses that are never moved, and
/// pthread rwlocks are made for use from many threads.
public final class StripedLocks: @unchecked Sendable {
    private let locks: UnsafeMutablePointer<pthread_rwlock_t>
    private let count: Int

    public init(count: Int = 64) {
        self.count = count
        locks = .allocate(capacity: count)
        for i in 0..<count { pthread_rwlock_init(locks + i, nil) }
    }

    deinit {
        for i in 0..<count { pthread_rwlock_destroy(locks + i) }
        locks.deallocate()
    }

    @inline(__always) private func slot(_ index: UInt64) -> UnsafeMutablePointer<pthread_rwlock_t> {
        locks + Int(index % UInt64(count))
    }

    public func lockShared(_ index: UInt64) { pthread_rwlock_rdlock(slot(index)) }
    public func lockExclusive(_ index: UInt64) { pthread_rwlock_wrlock(slot(index)) }
    public func unlock(_ index: UInt64) { pthread_rwlock_unlock(slot(index)) }

    /// Takes every stripe exclusively, in order: no I/O is in flight on the object until `unlockAll`.
    public func lockAll() { for i in 0..<count { pthread_rwlock_wrlock(locks + i) } }
    public func unlockAll() { for i in 0..<count { pthread_rwlock_unlock(locks + i) } }
}
