import Foundation
import NIOCore
// S3Store — chunks as objects in an S3-compatible bucket (Ceph RGW, MinIO, AWS S3), one object per chunk
// at `PREFIX/chunks/<16 hex digits of the chunk ID>`.
//
// Address space: physical chunks (ChunkID).
// Object model: an object holds the chunk's bytes up to its last non-zero byte (trailing zeros are not
// stored); bytes past the object's end read as zeros. The label rides along as user metadata
// `x-amz-meta-tessera-label: <volume>.<index>.<epoch>`.
// State (in `state`, a Lock):
// - sizes: the size of every object under the prefix (listed at open, then kept by our PUTs and
//   DELETEs), and `used`, their sum. This is what usage() and the capacity check read, so that placement
//   queries do not list the bucket; `exactUsage()` relists and resets it. It assumes this process is the
//   only writer of the prefix (one daemon owns a store, as it owns the catalog).
// - labels: the labels learnt from our GETs, HEADs, PUTs and setLabel, so that `replace` (a PUT without a
//   GET) keeps a chunk's label; a chunk not in the cache is HEADed once before its first replace. Both
//   maps hold one small entry per chunk this process touched (tens of bytes each).
// Invariants:
// - S3 replaces an object atomically: a GET sees the old or the new object, never a mix. So `replace`
//   is one PUT, and a partial write is read-modify-write of the whole object (GET, patch, PUT) under the
//   chunk's stripe held exclusive, so two partial writes of a chunk never lose each other's bytes.
// - A PUT returns only after the server acknowledged it, and S3 acknowledges durable writes with
//   read-after-write consistency: nothing is pending, so flush() has nothing to wait for.
// - A PUT that would take `used` past `capacity` throws `.noSpace` before anything is sent.
// - 404 NoSuchKey (or a HEAD's bare 404) means the chunk is missing; 403 is `.io` (logged "access denied",
//   never with a secret); QuotaExceeded or 507 is `.noSpace`; everything else, after the client's retries,
//   is `.io`.
// Lock order: stripe (held across the chunk's requests) → state (short, never across I/O).
import Synchronization
import TesseraCore
import TesseraStores

public final class S3Store: ChunkStore, StoreMaintenance {
    public let chunkSize: Int
    /// The configured quota in bytes: what usage() reports as total (`store set --size` changes it).
    public var capacity: UInt64 { quota.load(ordering: .relaxed) }
    private let quota: Atomic<UInt64>
    public let client: S3Client
    /// `PREFIX/chunks/` (or `chunks/` without a prefix).
    public let chunksPrefix: String
    private let stripes = StripedLocks()

    private struct State {
        var sizes: [ChunkID: Int] = [:]
        var used: UInt64 = 0
        /// nil value: known to have no label.
        var labels: [ChunkID: ChunkLabel?] = [:]
    }
    private let state = Lock(State())

    static let labelMetadata = "tessera-label"

    /// Opens the store: checks that the bucket is reachable and the credentials work (HEAD bucket, then a
    /// listing of the prefix, which also fills the space counter). Throws a one-line message: bucket
    /// missing, access denied, cannot connect to host:port, TLS failure, timed out.
    public init(
        endpoint: S3Endpoint, credentials: S3Credentials, chunkSize: Int, capacity: UInt64,
        options: S3ClientOptions = S3ClientOptions()
    ) throws(StoreSetupError) {
        precondition(chunkSize > 0, "chunk size must be positive")
        precondition(capacity > 0, "an S3 store needs a capacity (quota) in bytes")
        self.chunkSize = chunkSize
        self.quota = Atomic(capacity)
        self.client = S3Client(endpoint: endpoint, credentials: credentials, options: options)
        self.chunksPrefix = endpoint.key("chunks/")
        do {
            try client.headBucket()
            let objects = try client.listAll(prefix: chunksPrefix)
            state.withLock { s in
                for o in objects {
                    guard let chunk = Self.chunk(fromKey: o.key, prefix: chunksPrefix) else { continue }
                    s.sizes[chunk] = Int(o.size)
                    s.used += o.size
                }
            }
        } catch {
            client.shutdown()
            throw Self.setupError(error, endpoint: endpoint)
        }
    }

    deinit { client.shutdown() }

    /// Closes the HTTP connections; the store is unusable afterwards (requests throw `.io`).
    public func close() { client.shutdown() }

    static func setupError(_ failure: S3Failure, endpoint: S3Endpoint) -> StoreSetupError {
        let at = "\(endpoint.host):\(endpoint.port)"
        switch failure {
        case .status(404, _, _):
            return StoreSetupError("S3 bucket \"\(endpoint.bucket)\" does not exist at \(at)")
        case .status(403, let code, _):
            let why = code.map { " (\($0))" } ?? ""
            return StoreSetupError(
                "S3 access denied to bucket \"\(endpoint.bucket)\" at \(at)\(why): check the access key ID and secret")
        case .status(let s, let code, let message):
            return StoreSetupError(
                "S3 bucket \"\(endpoint.bucket)\" at \(at) answered HTTP \(s)" + (code.map { " \($0)" } ?? "")
                    + (message.map { ": \($0)" } ?? ""))
        case .connect(let why): return StoreSetupError("cannot connect to S3 at \(at) (\(why))")
        case .timeout(let why): return StoreSetupError("S3 at \(at) did not answer in time (\(why))")
        case .tls(let why): return StoreSetupError("TLS failure talking to S3 at \(at) (\(why))")
        case .protocolError(let why): return StoreSetupError("S3 at \(at) gave a bad answer (\(why))")
        }
    }

    // MARK: Keys and labels

    public func key(_ chunk: ChunkID) -> String {
        let hex = String(chunk.rawValue, radix: 16)
        return chunksPrefix + String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// The chunk a listed key names, or nil for a foreign key (not exactly 16 lower-case hex digits).
    static func chunk(fromKey key: String, prefix: String) -> ChunkID? {
        guard key.hasPrefix(prefix) else { return nil }
        let name = key.dropFirst(prefix.count)
        guard name.count == 16, name.allSatisfy({ $0.isHexDigit && !$0.isUppercase }),
            let raw = UInt64(name, radix: 16), raw != 0
        else { return nil }
        return ChunkID(raw)
    }

    static func encode(_ label: ChunkLabel) -> String { "\(label.volume.rawValue).\(label.index).\(label.epoch)" }

    static func decode(_ text: String) -> ChunkLabel? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let v = Int64(parts[0]), let i = UInt64(parts[1]), let e = UInt64(parts[2]) else {
            return nil
        }
        return ChunkLabel(volume: VolumeID(v), index: i, epoch: e)
    }

    private static func label(in response: S3Response) -> ChunkLabel? {
        response.headers.first(name: "x-amz-meta-" + labelMetadata).flatMap(decode)
    }

    private func metadata(_ label: ChunkLabel?) -> [String: String] {
        label.map { [Self.labelMetadata: Self.encode($0)] } ?? [:]
    }

    // MARK: Errors

    /// The one place an S3 failure becomes a StoreError (and is logged, without secrets).
    private func storeError(_ failure: S3Failure, _ chunk: ChunkID, _ op: String) -> StoreError {
        let context = "S3 \(op) of \(chunk) (\(client.endpoint))"
        if failure.code == "QuotaExceeded" || failure.status == 507 {
            Log.error("\(context): the server is out of space or quota (\(failure))")
            return .noSpace
        }
        switch failure {
        case .status(404, let code, _) where code == nil || code == "NoSuchKey":
            return .missing(chunk: chunk)
        case .status(403, _, _):
            Log.error("\(context): access denied (\(failure))")
            return .io(errno: EACCES, chunk: chunk)
        case .timeout:
            Log.error("\(context): \(failure)")
            return .io(errno: ETIMEDOUT, chunk: chunk)
        default:
            Log.error("\(context): \(failure)")
            return .io(errno: EIO, chunk: chunk)
        }
    }

    // MARK: Data path

    public func read(_ chunk: ChunkID, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        guard buffer.count > 0 else {
            _ = try head(chunk)
            return
        }
        let response: S3Response
        do {
            response = try client.get(key(chunk), range: offset..<offset + buffer.count)
        } catch {
            throw storeError(error, chunk, "GET")
        }
        var source: ByteBuffer? = response.body
        var skip = 0
        switch response.status {
        case 206:
            // Content-Range: bytes START-END/TOTAL — the part must start where we asked.
            let range = response.headers.first(name: "content-range") ?? ""
            let start = range.split(separator: " ").last?.split(separator: "-").first.flatMap { Int($0) }
            guard start == offset else {
                Log.error("S3 GET of \(chunk): asked for bytes from \(offset), got Content-Range \"\(range)\"")
                throw .io(errno: EIO, chunk: chunk)
            }
        case 200:
            skip = offset  // the server ignored the range (e.g. an empty object): the whole object came
        case 416:
            source = nil  // the range starts past the object's end: all zeros
        default:
            Log.error("S3 GET of \(chunk): unexpected HTTP \(response.status)")
            throw .io(errno: EIO, chunk: chunk)
        }
        var copied = 0
        if let source, source.readableBytes > skip {
            source.withUnsafeReadableBytes { raw in
                copied = min(raw.count - skip, buffer.count)
                buffer.baseAddress!.copyMemory(from: raw.baseAddress! + skip, byteCount: copied)
            }
        }
        if copied < buffer.count {
            UnsafeMutableRawBufferPointer(rebasing: buffer[copied...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    public func write(_ chunk: ChunkID, offset: Int, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        precondition(offset >= 0 && offset + buffer.count <= chunkSize, "write past the chunk")
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        var (bytes, label) = try fetch(chunk) ?? ([], nil)
        if bytes.count < offset + buffer.count { bytes += repeatElement(0, count: offset + buffer.count - bytes.count) }
        bytes.withUnsafeMutableBytes { dst in
            if buffer.count > 0 {
                (dst.baseAddress! + offset).copyMemory(from: buffer.baseAddress!, byteCount: buffer.count)
            }
        }
        try store(chunk, bytes, label: label)
    }

    public func zero(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        guard length > 0 else { return }
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        guard case (var bytes, let label)? = try fetch(chunk) else { return }  // absent stays absent
        guard offset < bytes.count else { return }  // already past the end: reads as zeros
        let end = min(bytes.count, offset + length)
        bytes.replaceSubrange(offset..<end, with: repeatElement(0, count: end - offset))
        try store(chunk, bytes, label: label)
    }

    /// Replaces the whole content of `chunk` with `buffer` (count ≤ chunkSize; the rest reads as zeros),
    /// creating it if absent. Atomic: one PUT, so the object is the old or the new one, never a mix.
    public func replace(_ chunk: ChunkID, with buffer: UnsafeRawBufferPointer) throws(StoreError) {
        precondition(buffer.count <= chunkSize, "replace with more than a chunk")
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        let label = try knownLabel(chunk)
        try store(chunk, Array(buffer), label: label)
    }

    /// The stored bytes of `chunk` (at most chunkSize; bytes past the returned count read as zeros).
    /// Throws `.missing` when the chunk does not exist.
    public func readAll(_ chunk: ChunkID) throws(StoreError) -> [UInt8] {
        guard let (bytes, _) = try fetch(chunk) else { throw .missing(chunk: chunk) }
        return bytes
    }

    /// Always true: an object is written whole, so callers should use readAll and replace.
    public func prefersWholeChunks(_ chunk: ChunkID) -> Bool { true }

    /// No checksums here: a block cannot be marked unreadable (only the checksum layer above can).
    public func markUnreadable(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        throw .io(errno: EOPNOTSUPP, chunk: chunk)
    }

    public func delete(_ chunk: ChunkID) throws(StoreError) {
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        do { try client.delete(key(chunk)) } catch { throw storeError(error, chunk, "DELETE") }
        state.withLock { s in
            if let old = s.sizes.removeValue(forKey: chunk) { s.used -= UInt64(old) }
            s.labels[chunk] = .some(nil)  // gone, so no label: a later first write starts without one
        }
    }

    /// Nothing to wait for: every PUT and DELETE returned only once the server had made it durable.
    public func flush() throws(StoreError) {}

    /// As flush(): nothing is pending on any chunk.
    public func flush(chunks: Set<ChunkID>) throws(StoreError) {}

    // MARK: Space

    /// From the running counter (no request): `used` is the sum of our objects' sizes.
    public func usage() throws(StoreError) -> StoreUsage {
        let used = state.withLock { $0.used }
        let capacity = self.capacity
        return StoreUsage(totalBytes: capacity, freeBytes: capacity > used ? capacity - used : 0, usedBytes: used)
    }

    /// Lists the prefix, resets the counter to what the server holds, and reports it.
    public func exactUsage() throws(StoreError) -> StoreUsage {
        let objects: [S3Object]
        do { objects = try client.listAll(prefix: chunksPrefix) } catch { throw storeError(error, .none, "LIST") }
        state.withLock { s in
            s.sizes = [:]
            s.used = 0
            for o in objects {
                guard let chunk = Self.chunk(fromKey: o.key, prefix: chunksPrefix) else { continue }
                s.sizes[chunk] = Int(o.size)
                s.used += o.size
            }
        }
        return try usage()
    }

    public func allChunks() throws(StoreError) -> [ChunkID] {
        let objects: [S3Object]
        do { objects = try client.listAll(prefix: chunksPrefix) } catch { throw storeError(error, .none, "LIST") }
        return objects.compactMap { Self.chunk(fromKey: $0.key, prefix: chunksPrefix) }
    }

    // MARK: Maintenance

    /// HEAD of the bucket: answers when the server does and the credentials still work.
    public func probe() throws(StoreError) {
        do { try client.headBucket() } catch { throw storeError(error, .none, "HEAD bucket") }
    }

    /// Connections are re-established by the HTTP client on demand: nothing to drop.
    public func reopen() {}

    /// The quota (nil keeps the current one: an object store always has one).
    public func setQuota(_ bytes: UInt64?) -> Bool {
        if let bytes, bytes > 0 { quota.store(bytes, ordering: .relaxed) }
        return true
    }

    // MARK: Labels and checks

    /// A server-side self-copy with the label as new metadata (no data moves through us).
    public func setLabel(_ chunk: ChunkID, _ label: ChunkLabel) throws(StoreError) {
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        do {
            try client.replaceMetadata(key(chunk), metadata: metadata(label))
        } catch {
            throw storeError(error, chunk, "COPY")
        }
        state.withLock { $0.labels[chunk] = .some(label) }
    }

    public func label(of chunk: ChunkID) throws(StoreError) -> ChunkLabel? {
        Self.label(in: try head(chunk))
    }

    /// Objects carry no checksums of ours: the ChecksumLayer above verifies.
    public func check(_ chunk: ChunkID) throws(StoreError) -> ChunkCheck {
        _ = try head(chunk)
        return .unchecked
    }

    // MARK: Helpers (called with the chunk's stripe held, except fetch from readAll)

    /// HEAD of the chunk's object. A HEAD's 404 has no body to say NoSuchKey from NoSuchBucket, so a bare
    /// 404 is checked with a HEAD of the bucket: a vanished bucket must be `.io`, never a missing chunk.
    private func head(_ chunk: ChunkID) throws(StoreError) -> S3Response {
        let failure: S3Failure
        do { return try client.head(key(chunk)) } catch { failure = error }
        let mapped = storeError(failure, chunk, "HEAD")
        guard case .missing = mapped else { throw mapped }
        do { try client.headBucket() } catch {
            let why = error.status == 404 ? "the bucket is gone" : "\(error)"
            Log.error("S3 HEAD of \(chunk) (\(client.endpoint)): \(why)")
            throw .io(errno: EIO, chunk: chunk)
        }
        throw mapped
    }

    /// The object's bytes and label, or nil when it does not exist. Remembers the label.
    private func fetch(_ chunk: ChunkID) throws(StoreError) -> ([UInt8], ChunkLabel?)? {
        let response: S3Response
        do {
            response = try client.get(key(chunk))
        } catch {
            let mapped = storeError(error, chunk, "GET")
            guard case .missing = mapped else { throw mapped }
            state.withLock { $0.labels[chunk] = .some(nil) }
            return nil
        }
        guard response.status == 200 else {
            Log.error("S3 GET of \(chunk): unexpected HTTP \(response.status)")
            throw .io(errno: EIO, chunk: chunk)
        }
        let bytes = response.bodyBytes
        guard bytes.count <= chunkSize else {
            Log.error("S3 object of \(chunk) holds \(bytes.count) bytes, more than a chunk (\(chunkSize))")
            throw .io(errno: EIO, chunk: chunk)
        }
        let label = Self.label(in: response)
        state.withLock { $0.labels[chunk] = .some(label) }
        return (bytes, label)
    }

    /// The chunk's label: from the cache, else from a HEAD (nil for an absent chunk).
    private func knownLabel(_ chunk: ChunkID) throws(StoreError) -> ChunkLabel? {
        if let known = state.withLock({ $0.labels[chunk] }) { return known }
        do throws(StoreError) {
            let label = Self.label(in: try head(chunk))
            state.withLock { $0.labels[chunk] = .some(label) }
            return label
        } catch {
            if case .missing = error { return nil }
            throw error
        }
    }

    /// PUTs `bytes` (trailing zeros dropped) as the whole object, keeping `label`; accounts the space.
    private func store(_ chunk: ChunkID, _ bytes: [UInt8], label: ChunkLabel?) throws(StoreError) {
        var end = bytes.count
        while end > 0 && bytes[end - 1] == 0 { end -= 1 }
        let old: Int? = try state.withLock { (s) throws(StoreError) -> Int? in
            let old = s.sizes[chunk]
            let newUsed = s.used - UInt64(old ?? 0) + UInt64(end)
            if end > old ?? 0 && newUsed > capacity { throw .noSpace }
            s.sizes[chunk] = end
            s.used = newUsed
            return old
        }
        let result = bytes[0..<end].withUnsafeBytes { raw in
            Result { () throws(S3Failure) in try client.put(key(chunk), body: raw, metadata: metadata(label)) }
        }
        if case .failure(let error) = result {
            // The PUT most likely did not happen: undo the accounting (exactUsage() repairs a guess).
            state.withLock { s in
                s.used = s.used - UInt64(end) + UInt64(old ?? 0)
                s.sizes[chunk] = old
            }
            throw storeError(error, chunk, "PUT")
        }
        state.withLock { $0.labels[chunk] = .some(label) }
    }
}
