// What a Volume does when its store fails: the error reaches the caller, and the volume stays
// consistent (no stale data exposed, no size change from an operation that failed).

import TesseraCatalog
import TesseraCore
import TesseraTestSupport
import Testing

@testable import TesseraEngine

@Suite("Volume under store failures")
struct FailureTests {
    static let cs = 16 * 1024

    func wired(size: UInt64) throws -> (HandWiredVolume, FaultyStore) {
        let faulty = FaultyStore(wrapping: MemoryStore(chunkSize: Self.cs), seed: 1)
        return (try HandWiredVolume(store: faulty, size: size), faulty)
    }

    @Test(arguments: [FaultyStore.Fault.io, .noSpace, .readOnly])
    func everyFailedCallThrowsAndNeverSucceedsSilently(fault: FaultyStore.Fault) throws {
        let (w, faulty) = try wired(size: UInt64(4 * Self.cs))
        let v = w.volume
        try v.write(.pattern(2 * Self.cs, seed: 1), at: 0)
        faulty.rules = [.init(Set(FaultyStore.Operation.allCases), .always, fault)]
        let expected = fault == .io ? nil : (fault == .noSpace ? StoreError.noSpace : StoreError.readOnly)
        func check(_ what: String, _ body: () throws -> Void) {
            do {
                try body()
                Issue.record("\(what) succeeded although every store call fails with \(fault)")
            } catch let e as StoreError {
                if let expected { #expect(e == expected, "\(what)") }
            } catch {
                Issue.record("\(what) threw \(error), not a StoreError")
            }
        }
        check("read of a mapped chunk") { _ = try v.read(at: 10, count: 10) }
        check("write in place") { try v.write([1], at: 10) }
        check("write to a new chunk") { try v.write([1], at: UInt64(3 * Self.cs)) }
        check("partial discard") { try v.discard(at: 5, length: 5) }
        check("flush") { try v.flush() }
        faulty.rules = []
        try v.flush()
        // Nothing the failed calls did is visible: the first chunk is as written, the new one absent.
        expectBytes(try v.read(at: 0, count: 2 * Self.cs), .pattern(2 * Self.cs, seed: 1))
        #expect(v.mappedChunks == 2)
        // Five calls threw; a sixth fault may hit the best-effort delete of the chunk the failed
        // "write to a new chunk" allocated (it was never mapped, so it is cleaned up, not reported).
        #expect(faulty.counters.totalFaults - (faulty.counters.faults[.delete] ?? 0) == 5)
    }

    @Test func failedFlushKeepsTheWorkForTheNextFlush() throws {
        let (w, faulty) = try wired(size: UInt64(4 * Self.cs))
        try w.volume.write(.pattern(Self.cs, seed: 2), at: 0)
        faulty.rules = [.init([.flush], .nthCall(1))]
        #expect(throws: StoreError.self) { try w.volume.flush() }
        #expect(w.volume.isDirty, "the uncommitted map change is kept")
        try w.volume.flush()
        #expect(!w.volume.isDirty)
        try w.reload()
        expectBytes(try w.volume.read(at: 0, count: Self.cs), .pattern(Self.cs, seed: 2))
    }

    /// A shrink whose tail-zeroing fails must not leave the chunks past the new end mapped: growing again
    /// would bring their old bytes back (data that was truncated away reappears).
    @Test func failedShrinkNeverResurrectsTruncatedData() throws {
        let cs = Self.cs
        let (w, faulty) = try wired(size: UInt64(4 * cs))
        let v = w.volume
        try v.write(.pattern(4 * cs, seed: 3), at: 0)
        faulty.rules = [.init([.zero], .nthCall(1))]
        let cut = UInt64(cs + cs / 2)
        #expect(throws: StoreError.self) { try v.resize(to: cut) }
        let sizeAfterFailure = v.size
        try v.resize(to: UInt64(4 * cs))  // grow back (no store call needed)
        let tail = try v.read(at: cut, count: 4 * cs - Int(cut))
        if sizeAfterFailure == cut {
            // The shrink took effect: everything past it must read as zeros.
            expectBytes(tail, .zeros(tail.count), "after a failed shrink to \(cut) and a grow, the old tail came back")
        } else {
            // The shrink was undone: the data is still there, which is also consistent.
            #expect(sizeAfterFailure == UInt64(4 * cs))
        }
    }

    /// A write that fails should not change the size of the volume (POSIX: a failed write(2) does not
    /// extend the file).
    @Test func failedWritePastTheEndDoesNotGrowTheVolume() throws {
        let (w, faulty) = try wired(size: 4096)
        faulty.rules = [.init([.write], .always)]
        #expect(throws: StoreError.self) { try w.volume.write(.pattern(100, seed: 1), at: 1 << 20) }
        #expect(w.volume.size == 4096)
    }

    /// A new chunk whose first write or label fails is not mapped; it must not stay on the store either
    /// (today it stays until the next engine start collects it: a leak for a long-running mount).
    @Test(arguments: [FaultyStore.Operation.write, .setLabel])
    func failedFirstWriteLeavesNoOrphan(failing op: FaultyStore.Operation) throws {
        let memory = MemoryStore(chunkSize: Self.cs)
        let faulty = FaultyStore(wrapping: memory, rules: [.init([op], .always)])
        let w = try HandWiredVolume(store: faulty, size: UInt64(4 * Self.cs))
        #expect(throws: StoreError.self) { try w.volume.write(.pattern(100, seed: 1), at: 0) }
        #expect(w.volume.mappedChunks == 0)
        faulty.rules = []
        try w.volume.flush()
        #expect(memory.chunkCount == 0, "an unmapped chunk was left on the store after a failed \(op)")
    }
}
