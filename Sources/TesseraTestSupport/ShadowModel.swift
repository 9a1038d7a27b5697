// ShadowModel — the expected contents of one volume, as a flat byte image, for model tests: apply every
// operation to the volume and to the model, then compare what the volume reads with what the model says.
//
// Address space: volume bytes (0..<size), the same as `Volume.read/write`.
//
// State: `bytes`, exactly `size` long; `undefined`, sorted disjoint ranges of bytes whose content the
// test cannot know (a write or discard that failed part-way), skipped by comparisons until a successful
// operation defines them again.
//
// Semantics mirrored from the volume engine (its contract, not its code):
// - Never-written bytes read as zeros; so does everything at or past `size` when the volume grows.
// - A write that ends past `size` grows the volume to its end (the gap reads as zeros).
// - A read returns min(count, size - offset) bytes (0 at or past the end).
// - Discard zeroes [offset, offset+length) clipped to `size` and never changes the size.
// - Resize sets the size; shrinking forgets the tail, so growing again reads zeros there.
// - A failed write has grown the size (the volume records the new size before it writes data) and
//   leaves its range undefined.
// Invariants: `bytes.count == size`; undefined ranges lie below `size`, sorted, disjoint, non-empty.
// Not thread-safe: model tests keep it in a lock and apply each operation after the volume returned.
// Comparisons use memcmp: tests run unoptimised, and a byte loop there would dominate the run time.

import TesseraCore

#if canImport(Glibc)
    import Glibc
#endif

public struct ShadowModel: Sendable {
    /// Largest image the model will hold; model tests use small volumes.
    public static let maxSize: UInt64 = 1 << 30

    public private(set) var bytes: [UInt8]
    private var undefined: [Range<Int>] = []

    public var size: UInt64 { UInt64(bytes.count) }

    public init(size: UInt64 = 0) {
        precondition(size <= Self.maxSize, "ShadowModel holds at most \(Self.maxSize) bytes")
        bytes = [UInt8](repeating: 0, count: Int(size))
    }

    private mutating func grow(to end: UInt64) {
        precondition(end <= Self.maxSize, "ShadowModel holds at most \(Self.maxSize) bytes")
        if end > size { bytes.append(contentsOf: repeatElement(0, count: Int(end - size))) }
    }

    /// Removes `r` from the undefined ranges.
    private mutating func define(_ r: Range<Int>) {
        guard !undefined.isEmpty, !r.isEmpty else { return }
        var out: [Range<Int>] = []
        for u in undefined {
            if u.upperBound <= r.lowerBound || u.lowerBound >= r.upperBound {
                out.append(u)
                continue
            }
            if u.lowerBound < r.lowerBound { out.append(u.lowerBound..<r.lowerBound) }
            if u.upperBound > r.upperBound { out.append(r.upperBound..<u.upperBound) }
        }
        undefined = out
    }

    /// A successful write: grows the image when it ends past `size`.
    public mutating func write(at offset: UInt64, _ data: [UInt8]) {
        grow(to: offset + UInt64(data.count))
        let lo = Int(offset)
        bytes.withUnsafeMutableBytes { dst in
            data.withUnsafeBytes { src in
                if !src.isEmpty { (dst.baseAddress! + lo).copyMemory(from: src.baseAddress!, byteCount: src.count) }
            }
        }
        define(lo..<lo + data.count)
    }

    /// A write that threw: the size stays, and the part of its range inside the image is unknown.
    public mutating func failedWrite(at offset: UInt64, length: Int) {
        // A failed write does not grow the image; inside it, the bytes are unknown.
        guard offset < size else { return }
        forget(at: offset, length: min(UInt64(length), size - offset))
    }

    /// What a read of `count` bytes at `offset` returns (short at the end). Undefined bytes show as
    /// they were last known.
    public func read(at offset: UInt64, count: Int) -> [UInt8] {
        guard offset < size else { return [] }
        let n = Int(min(UInt64(count), size - offset))
        return Array(bytes[Int(offset)..<Int(offset) + n])
    }

    /// The byte at `offset`: zero at or past `size`; nil when undefined.
    public func byte(at offset: UInt64) -> UInt8? {
        guard offset < size else { return 0 }
        let i = Int(offset)
        if undefined.contains(where: { $0.contains(i) }) { return nil }
        return bytes[i]
    }

    /// A successful discard: zeros within the size; the size does not change.
    public mutating func discard(at offset: UInt64, length: UInt64) {
        guard offset < size, length > 0 else { return }
        let lo = Int(offset)
        let end = Int(min(size, offset + length))
        bytes.withUnsafeMutableBytes { dst in
            _ = UnsafeMutableRawBufferPointer(rebasing: dst[lo..<end]).initializeMemory(as: UInt8.self, repeating: 0)
        }
        define(lo..<end)
    }

    /// A successful resize.
    public mutating func resize(to newSize: UInt64) {
        if newSize < size {
            define(Int(newSize)..<bytes.count)
            bytes.removeSubrange(Int(newSize)...)
        } else {
            grow(to: newSize)
        }
    }

    /// Marks `[offset, offset+length)` (clipped to the size) as unknown, after an operation failed part-way.
    public mutating func forget(at offset: UInt64, length: UInt64) {
        guard offset < size, length > 0 else { return }
        var r = Int(offset)..<Int(min(size, offset + length))
        var out: [Range<Int>] = []
        var placed = false
        for u in undefined {
            if u.upperBound < r.lowerBound {
                out.append(u)
            } else if u.lowerBound > r.upperBound {
                if !placed { out.append(r); placed = true }
                out.append(u)
            } else {
                r = min(r.lowerBound, u.lowerBound)..<max(r.upperBound, u.upperBound)
            }
        }
        if !placed { out.append(r) }
        undefined = out
    }

    /// Number of bytes the model does not know.
    public var undefinedBytes: Int { undefined.reduce(0) { $0 + $1.count } }

    /// One byte where the volume and the model disagree.
    public struct Mismatch: Sendable, CustomStringConvertible {
        public var offset: UInt64
        public var expected: UInt8
        public var actual: UInt8
        /// How many bytes of the compared range differ.
        public var count: Int
        public var description: String {
            "first mismatch at byte \(offset): expected \(expected), read \(actual) (\(count) byte(s) differ)"
        }
    }

    /// Compares `actual`, read from the volume at `offset`, with the model; undefined bytes are skipped
    /// and bytes at or past `size` must be zero. Returns the first mismatch, or nil when they agree.
    public func firstMismatch(_ actual: [UInt8], at offset: UInt64) -> Mismatch? {
        if agrees(actual, at: Int(offset)) { return nil }
        // Slow path, only on failure: find and count the differing bytes.
        var first: Mismatch?
        for (i, a) in actual.enumerated() {
            let at = offset + UInt64(i)
            if let e = byte(at: at), e != a {
                if first == nil { first = Mismatch(offset: at, expected: e, actual: a, count: 0) }
                first!.count += 1
            }
        }
        return first
    }

    /// memcmp over the defined pieces of [lo, lo + actual.count).
    private func agrees(_ actual: [UInt8], at lo: Int) -> Bool {
        let hi = lo + actual.count
        return actual.withUnsafeBytes { a in
            bytes.withUnsafeBytes { b in
                // The pieces of [lo, hi) between undefined ranges.
                var pieces: [Range<Int>] = []
                var pos = lo
                for u in undefined where u.upperBound > lo && u.lowerBound < hi {
                    if u.lowerBound > pos { pieces.append(pos..<u.lowerBound) }
                    pos = max(pos, u.upperBound)
                }
                if pos < hi { pieces.append(pos..<hi) }
                for piece in pieces {
                    let inImage = piece.clamped(to: 0..<b.count)
                    if !inImage.isEmpty
                        && memcmp(
                            a.baseAddress! + (inImage.lowerBound - lo), b.baseAddress! + inImage.lowerBound,
                            inImage.count) != 0
                    {
                        return false
                    }
                    // Past the end of the image: must be zero.
                    let beyond = max(piece.lowerBound, b.count)
                    if beyond < piece.upperBound
                        && !isAllZero(UnsafeRawBufferPointer(rebasing: a[(beyond - lo)..<(piece.upperBound - lo)]))
                    {
                        return false
                    }
                }
                return true
            }
        }
    }
}
