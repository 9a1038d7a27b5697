// CDPSegment — one open journal segment file, and the scan that reads one back at open.
//
// A segment's descriptor lives as long as the object: retention unlinks the file at once, and an image
// still reading an older instant keeps the object (so the descriptor) alive until it is closed.
import CLinux
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// `@unchecked Sendable`: every field is set once in init; the descriptor is closed once, in deinit.
public final class CDPSegment: @unchecked Sendable {
    public let id: UInt32
    public let generation: UInt64
    public let part: UInt64
    public let path: String
    let fd: FileDescriptor

    init(id: UInt32, generation: UInt64, part: UInt64, path: String, fd: FileDescriptor) {
        self.id = id
        self.generation = generation
        self.part = part
        self.path = path
        self.fd = fd
    }

    deinit { try? fd.close() }

    /// Creates the file with its header, durable (the directory too) before it returns.
    static func create(id: UInt32, generation: UInt64, part: UInt64, directory: String) throws(StoreError)
        -> CDPSegment
    {
        let path = directory + "/" + CDPFormat.segmentName(generation: generation, part: part)
        do {
            let fd = try FileDescriptor.open(
                path, .readWrite, options: [.create, .exclusiveCreate, .closeOnExec],
                permissions: [.ownerReadWrite])
            let header = CDPFormat.segmentHeader(generation: generation, part: part)
            _ = try header.withUnsafeBytes { try fd.writeAll(toAbsoluteOffset: 0, $0) }
            if fsync(fd.rawValue) != 0 { throw Errno(rawValue: errno) }
            try syncDirectory(directory)
            return CDPSegment(id: id, generation: generation, part: part, path: path, fd: fd)
        } catch let e as Errno {
            throw .from(errno: e.rawValue, chunk: .none)
        } catch {
            throw .io(errno: EIO, chunk: .none)
        }
    }

    static func syncDirectory(_ directory: String) throws(Errno) {
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd < 0 { throw Errno(rawValue: errno) }
        defer { close(dfd) }
        if fsync(dfd) != 0 { throw Errno(rawValue: errno) }
    }

    /// Writes a record's header and payload at `at` (one pwritev; a short one is finished by hand).
    func append(header: [UInt8], payload: UnsafeRawBufferPointer?, at: UInt64) throws(StoreError) {
        let total = header.count + (payload?.count ?? 0)
        let done: Int = header.withUnsafeBytes { h in
            var iov = [iovec(iov_base: UnsafeMutableRawPointer(mutating: h.baseAddress), iov_len: h.count)]
            if let payload, payload.count > 0 {
                iov.append(
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count))
            }
            while true {
                let n = pwritev(fd.rawValue, iov, Int32(iov.count), off_t(at))
                if n < 0 && errno == EINTR { continue }
                return n
            }
        }
        if done == total { return }
        if done < 0 { throw .from(errno: errno, chunk: .none) }
        var bytes = header
        if let payload { bytes += Array(payload) }
        do {
            _ = try bytes[done...].withUnsafeBytes { try fd.writeAll(toAbsoluteOffset: Int64(at) + Int64(done), $0) }
        } catch let e as Errno {
            throw .from(errno: e.rawValue, chunk: .none)
        } catch {
            throw .io(errno: EIO, chunk: .none)
        }
    }

    /// Reads `buffer.count` bytes at `at` (a write's payload); short only at a damaged end.
    func read(at: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        var done = 0
        while done < buffer.count {
            let n = pread(fd.rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(at) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw .from(errno: errno, chunk: .none) }
            if n == 0 { throw .io(errno: EIO, chunk: .none) }
            done += n
        }
    }

    func sync() throws(StoreError) {
        if fdatasync(fd.rawValue) != 0 { throw .from(errno: errno, chunk: .none) }
    }

    /// Reads an existing segment: every record that checks, in order, up to the first that does not
    /// (a torn tail), and whose seq follows `afterSeq`. Returns nil when the file is not a segment.
    static func scan(path: String, id: UInt32, afterSeq: UInt64) -> (CDPSegment, [(CDPRecordHeader, UInt64)])? {
        guard let fd = try? FileDescriptor.open(path, .readOnly, options: [.closeOnExec]) else { return nil }
        var head = [UInt8](repeating: 0, count: CDPFormat.segmentHeaderSize)
        let n = (try? head.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: 0, into: $0) }) ?? 0
        guard n == head.count, let generation = CDPFormat.parseSegmentHeader(head) else {
            try? fd.close()
            return nil
        }
        let name = String(path.split(separator: "/").last ?? "")
        let part = CDPFormat.parseSegmentName(name)?.part ?? 0
        var records: [(CDPRecordHeader, UInt64)] = []
        var at = UInt64(CDPFormat.segmentHeaderSize)
        var last = afterSeq
        var h = [UInt8](repeating: 0, count: CDPFormat.headerSize)
        while true {
            let got = (try? h.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: Int64(at), into: $0) }) ?? 0
            guard got == h.count, let decoded = CDPFormat.decode(h), decoded.0.seq > last else { break }
            let (header, crc) = decoded
            var payload = [UInt8](repeating: 0, count: Int(header.payload))
            let p =
                payload.isEmpty
                ? 0
                : (try? payload.withUnsafeMutableBytes {
                    try fd.read(fromAbsoluteOffset: Int64(at) + Int64(h.count), into: $0)
                }) ?? 0
            guard p == payload.count, CDPFormat.crc(of: h, payload: payload) == crc else { break }
            records.append((header, at + UInt64(h.count)))
            last = header.seq
            at += UInt64(h.count) + UInt64(header.payload)
        }
        return (CDPSegment(id: id, generation: generation, part: part, path: path, fd: fd), records)
    }
}
