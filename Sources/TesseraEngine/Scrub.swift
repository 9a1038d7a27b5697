// Scrub — reads every chunk on every store (or one store) and verifies it against its checksums,
// while volumes stay in use. Finds bitrot before a client reads it; each finding names the store,
// the chunk and, from its label, the volume and offset it belongs to.
import Foundation
import TesseraCore

public struct ScrubFinding: Codable, Sendable, Equatable {
    public var store: String
    /// The chunk ID, in hex (as on the store).
    public var chunk: String
    /// "corrupt" (checksum mismatch at `offsets`) or "unreadable" (the store failed to return it).
    public var problem: String
    public var offsets: [Int]
    public var volume: String?
    /// Byte offset of the chunk inside the volume, when its label says.
    public var volumeOffset: UInt64?
    public var detail: String?
    /// For a corrupt chunk: each lost block, where it shows (volume, offset, snapshots).
    public var lost: [LostBlock] = []
}

public struct ScrubReport: Codable, Sendable, Equatable {
    public var stores: Int = 0
    public var chunks: Int = 0
    public var bytes: UInt64 = 0
    public var ok: Int = 0
    /// Chunks on stores that keep no checksums of their own and sit under no checksum layer.
    public var unchecked: Int = 0
    public var findings: [ScrubFinding] = []
    public var seconds: Double = 0
    public var corrupt: Int { findings.filter { $0.problem == "corrupt" }.count }
    public var unreadable: Int { findings.filter { $0.problem == "unreadable" }.count }
}

extension Engine {
    /// Verifies every chunk of `storeName` (nil: every store). `progress(done, total)` is called as it
    /// goes. Chunks deleted while the scrub runs are skipped, not reported.
    public func scrub(store storeName: String? = nil, progress: (Int, Int) -> Void = { _, _ in }) throws(TesseraError)
        -> ScrubReport
    {
        let start = ContinuousClock.now
        let (records, opened, pools) = state.withLock { s in
            (s.stores.values.sorted { $0.id! < $1.id! }, s.opened, s.pools)
        }
        let chosen = records.filter { storeName == nil || $0.name == storeName }
        if let storeName, chosen.isEmpty { throw TesseraError(.notFound, "no store named '\(storeName)'") }
        var work: [(name: String, top: any ChunkStore, chunkSize: Int, chunks: [ChunkID])] = []
        for r in chosen {
            guard let o = opened[r.id!], let pool = pools[r.poolId] else { continue }
            do {
                work.append(
                    (
                        r.name, o.top, Int(pool.record.chunkSize),
                        try o.top.allChunks().sorted { $0.rawValue < $1.rawValue }
                    ))
            } catch {
                throw TesseraError(.io, "store \(r.name): cannot list its chunks: \(error)")
            }
        }
        let names = state.withLock { s in s.volumes.mapValues(\.name) }
        var report = ScrubReport()
        report.stores = work.count
        let total = work.reduce(0) { $0 + $1.chunks.count }
        var done = 0
        progress(0, total)
        for w in work {
            for chunk in w.chunks {
                defer {
                    done += 1
                    progress(done, total)
                }
                func finding(_ problem: String, _ offsets: [Int], _ detail: String?) -> ScrubFinding {
                    let label = try? w.top.label(of: chunk)
                    return ScrubFinding(
                        store: w.name, chunk: String(chunk.rawValue, radix: 16), problem: problem, offsets: offsets,
                        volume: label.flatMap { names[$0.volume] },
                        volumeOffset: label.map { $0.index * UInt64(w.chunkSize) },
                        detail: detail, lost: problem == "corrupt" ? losses(of: chunk, at: offsets) : [])
                }
                do throws(StoreError) {
                    switch try w.top.check(chunk) {
                    case .ok: report.ok += 1
                    case .unchecked: report.unchecked += 1
                    case .corrupt(let offsets):
                        report.findings.append(finding("corrupt", offsets, nil))
                        Log.error(
                            "scrub: checksum mismatch in chunk \(String(chunk.rawValue, radix: 16)) on store \(w.name) at \(offsets)"
                        )
                    }
                    report.chunks += 1
                    report.bytes += UInt64(w.chunkSize)
                } catch .missing {
                    continue  // deleted since the listing
                } catch .corrupt(_, let offset) {
                    report.chunks += 1
                    report.findings.append(finding("corrupt", [offset], nil))
                    Log.error(
                        "scrub: checksum mismatch in chunk \(String(chunk.rawValue, radix: 16)) on store \(w.name) at \(offset)"
                    )
                } catch {
                    report.chunks += 1
                    report.findings.append(finding("unreadable", [], "\(error)"))
                    Log.error(
                        "scrub: cannot read chunk \(String(chunk.rawValue, radix: 16)) on store \(w.name): \(error)")
                }
            }
        }
        let elapsed = (ContinuousClock.now - start).components
        report.seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
        return report
    }
}
