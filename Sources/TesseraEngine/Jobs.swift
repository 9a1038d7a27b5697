// Jobs — long operations kept in the catalog (`job`), so that they survive kill -9, unmount and
// reboot. Today one kind runs: store replace (migrate and drain have their kinds reserved).
//
// Runner: the mount starts one thread (`startJobs`) that works the active jobs (running or paused),
// oldest first, one at a time; without a mount the CLI works them inline (`runJobs`). A job step holds
// `work` (a lock held for a whole job attempt; cancel and stop take it after raising their flag, so
// they wait for the chunk in flight and never race the copier).
// A replace (ReplaceLayer.swift has the routing): the copier lists the source's chunks not yet copied,
// copies them in serial order, and every 64 chunks or second flushes the target and records the
// cursor; then `seal` copies what appeared meanwhile, and one catalog transaction makes the target
// the unit's primary (taking the source's name) and removes the source, as `store remove` does
// (its files stay, without manifests). A crash anywhere leaves the catalog naming either the pair
// (the job resumes from its cursor at the next mount) or the target alone (which then holds every
// chunk). A store error pauses the job with the error recorded; it is retried every few seconds and
// runs again once the store answers. Cancel: one transaction makes the source primary again (it
// holds every chunk and every write), then the target's chunks are removed.
// `--rate`: the copier sleeps so that it copies at most that many bytes a second.
// Limits of this slice: the old store must have room for what is written during the job (it takes
// every write); both stores must open when the engine opens (a dead target makes the mount refuse,
// as a dead store does today); `fsck --rebuild-catalog` of a catalog lost mid-job sees two stores
// naming one unit and is not handled; migrate and drain jobs are not built.
// Lock order: work → state (short).
import Foundation
import Synchronization
import TesseraCatalog
import TesseraCore

/// A job as the control plane shows it.
public struct JobInfo: Codable, Sendable, Equatable {
    public var id: Int64
    public var kind: String
    public var state: String
    public var subject: String
    public var doneChunks: Int64
    public var totalChunks: Int64
    public var doneBytes: Int64
    public var totalBytes: Int64
    /// The cap, bytes per second.
    public var rate: Int64?
    /// Bytes per second measured since the runner last took the job up (nil when it is not working).
    public var speed: Double?
    public var lastError: String?
    public var errorAt: Double?
    public var createdAt: Double
    public var updatedAt: Double

    init(_ r: JobRecord, speed: Double?) {
        id = r.id!
        kind = r.kind.rawValue
        state = r.state.rawValue
        subject = r.subject
        doneChunks = r.doneChunks
        totalChunks = r.totalChunks
        doneBytes = r.doneBytes
        totalBytes = r.totalBytes
        rate = r.rate
        self.speed = speed
        lastError = r.lastError
        errorAt = r.errorAt
        createdAt = r.createdAt
        updatedAt = r.updatedAt
    }

    /// Finished, one way or the other.
    public var isFinished: Bool { !["running", "paused"].contains(state) }
}

/// The job runner's flags and figures.
final class JobRunner: Sendable {
    struct State {
        var running = false
        var stop = false
        var alive = false
        var cancel: Set<Int64> = []
        var speed: [Int64: Double] = [:]
    }
    let state = Mutex(State())
    /// Held for a whole job attempt (see the header).
    let work = Lock(())
    /// How long a paused job waits before it is tried again.
    static let retryInterval = 2.0
}

extension Engine {
    /// How a job attempt ended.
    enum JobOutcome { case finished, paused, stopped }

    // MARK: Control plane

    /// `tessera store replace NAME …`: `spec` is the new store (its pool is ignored: it joins the old
    /// store's). Starts the job and returns it; the runner (or the CLI, unmounted) does the work.
    public func replaceStore(_ name: String, with spec: StoreSpec, rate: UInt64?) throws(TesseraError) -> JobInfo {
        guard
            let (source, sourceOpened, unit, role, pool) = state.withLock({ s in
                s.stores.values.first { $0.name == name }.flatMap { r in
                    s.opened[r.id!].flatMap { o in
                        s.unitOf[r.id!].flatMap { u in s.pools[r.poolId].map { (r, o, u, s.roles[r.id!], $0) } }
                    }
                }
            })
        else { throw TesseraError(.notFound, "no store named '\(name)'") }
        if role != .primary || state.withLock({ $0.replacing[unit] }) != nil {
            throw TesseraError(.busy, "store \(name) is already part of a replace job ('tessera job list')")
        }
        if let rate, rate == 0 { throw TesseraError(.invalid, "--rate must be greater than 0") }
        var spec = spec
        spec.pool = pool.record.name
        let (record, opened) = try openNewStore(spec, pool: pool.record)
        // The layer first passes everything to the source; begin() sets E with writes held off, so a
        // chunk handed out after E is written to both stores from its first byte.
        let layer = Self.replaceLayer(source: sourceOpened, target: opened)
        pool.layer.serve(unit, with: layer, health: sourceOpened.health)
        let end = (pool.layer.nextSerials()[unit] ?? 1) - 1
        layer.begin(end: end, cursor: 0)
        let now = Date().timeIntervalSince1970
        var job = JobRecord(kind: .replace, subject: "store \(name) → \(spec.location)", createdAt: now)
        job.unitId = unit.rawValue
        job.sourceStoreId = source.id
        job.poolId = pool.record.id
        job.endSerial = Int64(end)
        job.rate = rate.map { Int64(clamping: $0) }
        job.rename = name
        let target: StoreRecord
        do {
            (job, target) = try catalog.startReplace(job, target: record, unit: unit, source: source.id!)
        } catch {
            pool.layer.serve(unit, with: sourceOpened.top, health: sourceOpened.health)
            throw error
        }
        state.withLock { s in
            s.stores[target.id!] = target
            s.opened[target.id!] = opened
            s.unitOf[target.id!] = unit
            s.roles[target.id!] = .target
            s.roles[source.id!] = .source
            s.replacing[unit] = layer
        }
        try writeNewStoreManifests(target, pool: pool.record, unit: unit)
        startHealthCheck(target.id!)
        Log.info("job #\(job.id!): replacing store \(name) with \(spec.kind.rawValue) \(target.path)")
        return JobInfo(job, speed: nil)
    }

    /// Every job, oldest first.
    public func jobs() throws(TesseraError) -> [JobInfo] {
        let speeds = jobRunner.state.withLock { $0.speed }
        return try catalog.jobs().map { JobInfo($0, speed: speeds[$0.id!]) }
    }

    public func job(_ id: Int64) throws(TesseraError) -> JobInfo {
        guard let r = try catalog.job(id) else { throw TesseraError(.notFound, "no job #\(id)") }
        return JobInfo(r, speed: jobRunner.state.withLock { $0.speed[id] })
    }

    /// `tessera job cancel ID`: stops a running or paused job and undoes it (a replace: the old store
    /// stays, the new one leaves). Waits for the chunk in flight.
    public func cancelJob(_ id: Int64) throws(TesseraError) -> JobInfo {
        guard let r = try catalog.job(id) else { throw TesseraError(.notFound, "no job #\(id)") }
        guard r.state.isActive else {
            throw TesseraError(
                .invalid, "job #\(id) is \(r.state.rawValue); only a running or paused job can be cancelled")
        }
        jobRunner.state.withLock { _ = $0.cancel.insert(id) }
        defer { jobRunner.state.withLock { _ = $0.cancel.remove(id) } }
        try jobRunner.work.withLock { _ throws(TesseraError) in
            guard let now = try catalog.job(id), now.state.isActive else { return }
            try cancelReplace(now)
        }
        return try job(id)
    }

    // MARK: Runner

    /// Starts the runner thread (the mount calls it): it resumes every unfinished job.
    public func startJobs() {
        let start = jobRunner.state.withLock { r -> Bool in
            guard !r.running else { return false }
            (r.running, r.alive, r.stop) = (true, true, false)
            return true
        }
        guard start else { return }
        let t = Thread { [self] in
            defer { jobRunner.state.withLock { $0.alive = false } }
            while !jobRunner.state.withLock({ $0.stop }) {
                var worked = false
                for job in (try? catalog.jobs().filter(\.state.isActive)) ?? [] {
                    worked = true
                    let outcome = jobRunner.work.withLock { _ in attempt(job.id!, budget: nil) }
                    if outcome == .paused { napUntilStopped(JobRunner.retryInterval) }
                    if jobRunner.state.withLock({ $0.stop }) { return }
                }
                if !worked { napUntilStopped(0.5) }
            }
        }
        t.name = "tessera-jobs"
        t.start()
    }

    /// Stops the runner after the chunk in flight, with the progress recorded (unmount).
    public func stopJobs() {
        jobRunner.state.withLock { $0.stop = true }
        while jobRunner.state.withLock({ $0.alive }) { Thread.sleep(forTimeInterval: 0.02) }
        jobRunner.state.withLock { $0.running = false }
    }

    /// Works the unfinished jobs in this thread (the CLI without a mount; tests), oldest first, until
    /// each is done or paused, or `budget` chunks were copied in all.
    public func runJobs(budget: Int? = nil) throws(TesseraError) {
        var left = budget
        for job in try catalog.jobs().filter(\.state.isActive) {
            let done = try catalog.job(job.id!)?.doneChunks ?? 0
            _ = jobRunner.work.withLock { _ in attempt(job.id!, budget: left) }
            if let l = left {
                left = l - Int((try catalog.job(job.id!)?.doneChunks ?? 0) - done)
                if left! <= 0 { return }
            }
        }
    }

    private func napUntilStopped(_ seconds: Double) {
        var slept = 0.0
        while slept < seconds && !jobRunner.state.withLock({ $0.stop }) {
            Thread.sleep(forTimeInterval: 0.1)
            slept += 0.1
        }
    }

    /// One attempt at job `id` (with `work` held).
    private func attempt(_ id: Int64, budget: Int?) -> JobOutcome {
        guard var job = try? catalog.job(id), job.state.isActive else { return .finished }
        do throws(TesseraError) {
            switch job.kind {
            case .replace: return try runReplace(&job, budget: budget)
            case .migrate, .drain:
                throw TesseraError(.invalid, "this release cannot run \(job.kind.rawValue) jobs")
            }
        } catch {
            job.state = .paused
            job.lastError = error.message
            job.errorAt = Date().timeIntervalSince1970
            if (try? catalog.updateJob(job)) != nil {
                Log.error("job #\(id) paused: \(error.message)")
            }
            jobRunner.state.withLock { _ = $0.speed.removeValue(forKey: id) }
            return .paused
        }
    }

    private func interrupted(_ id: Int64) -> Bool {
        jobRunner.state.withLock { $0.stop || $0.cancel.contains(id) }
    }

    /// Copies what is left of a replace, then ends it; see the header.
    private func runReplace(_ job: inout JobRecord, budget: Int?) throws(TesseraError) -> JobOutcome {
        let id = job.id!
        guard let unit = job.unitId.map({ UnitID($0) }), let layer = state.withLock({ $0.replacing[unit] }) else {
            throw TesseraError(.catalog, "job #\(id): its placement unit is not being replaced")
        }
        func storeFailure(_ e: StoreError) -> TesseraError { TesseraError(.io, "copying \(describe(unit)): \(e)") }
        let pending: [ChunkID]
        do throws(StoreError) { pending = try layer.pending() } catch { throw storeFailure(error) }
        let chunkSize = Int64(layer.chunkSize)
        job.totalChunks = job.doneChunks + Int64(pending.count)
        job.totalBytes = max(job.doneBytes, job.totalChunks * chunkSize)
        job.state = .running
        try catalog.updateJob(job)
        let started = ContinuousClock.now
        var lastSave = started
        var copied = 0
        var chunks = 0
        var batch: Set<ChunkID> = []
        func save() throws(TesseraError) {
            do throws(StoreError) { job.cursor = Int64(try layer.persist(batch)) } catch { throw storeFailure(error) }
            batch = []
            try catalog.updateJob(job)
            lastSave = .now
        }
        for c in pending {
            if interrupted(id) || budget.map({ chunks >= $0 }) == true {
                try save()
                return .stopped
            }
            let n: Int
            do throws(StoreError) { n = try layer.copy(c) } catch { throw storeFailure(error) }
            batch.insert(c)
            copied += n
            chunks += 1
            job.doneChunks += 1
            job.doneBytes += Int64(n)
            let elapsed = Self.seconds(ContinuousClock.now - started)
            jobRunner.state.withLock { $0.speed[id] = Double(copied) / max(elapsed, 0.001) }
            if let rate = job.rate {
                let due = Double(copied) / Double(rate)
                if due > elapsed { Thread.sleep(forTimeInterval: min(due - elapsed, 1)) }
            }
            if batch.count >= 64 || ContinuousClock.now - lastSave > .seconds(1) { try save() }
        }
        if interrupted(id) {
            try save()
            return .stopped
        }
        do throws(StoreError) {
            for c in try layer.seal() { batch.insert(c) }
        } catch { throw storeFailure(error) }
        try save()
        try finishReplace(job, unit: unit, layer: layer)
        return .finished
    }

    private static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// The stores of a replace job and their pool.
    private func replaceParties(_ job: JobRecord) throws(TesseraError) -> (
        source: StoreRecord, sourceOpened: OpenedStore, target: StoreRecord, targetOpened: OpenedStore, pool: Pool
    ) {
        guard
            let parties = state.withLock({ s in
                job.sourceStoreId.flatMap { sid in
                    job.targetStoreId.flatMap { tid in
                        s.stores[sid].flatMap { sr in
                            s.stores[tid].flatMap { tr in
                                s.opened[sid].flatMap { so in
                                    s.opened[tid].flatMap { to in s.pools[sr.poolId].map { (sr, so, tr, to, $0) } }
                                }
                            }
                        }
                    }
                }
            })
        else { throw TesseraError(.catalog, "job #\(job.id!): its stores are not both open") }
        return parties
    }

    /// Every chunk is on the target: it becomes the unit's primary under the source's name, and the
    /// source leaves (catalog first: a crash after it finds the target alone, holding everything).
    private func finishReplace(_ job: JobRecord, unit: UnitID, layer: ReplaceLayer) throws(TesseraError) {
        let (source, _, target, targetOpened, pool) = try replaceParties(job)
        do { try targetOpened.top.flush() } catch {
            throw TesseraError(.io, "cannot flush store \(target.name): \(error)")
        }
        var done = job
        done.state = .done
        done.cursor = Int64(layer.end)
        done.totalChunks = done.doneChunks
        done.totalBytes = done.doneBytes
        let name = job.rename ?? target.name
        try catalog.endReplace(done, unit: unit, keep: target.id!, drop: source.id!, rename: name)
        pool.layer.serve(unit, with: targetOpened.top, health: targetOpened.health)
        var renamed = target
        renamed.name = name
        state.withLock { s in
            Self.forgetStore(source.id!, &s)
            s.stores[target.id!] = renamed
            s.roles[target.id!] = .primary
            s.replacing[unit] = nil
        }
        jobRunner.state.withLock { _ = $0.speed.removeValue(forKey: job.id!) }
        if source.kind == StoreSpec.Kind.dir.rawValue { Manifests.removeAll(root: source.path) }
        if renamed.kind == StoreSpec.Kind.dir.rawValue {
            do {
                try Manifests.writeStore(
                    StoreManifest(renamed, pool.record, unit: unit, catalogID: catalogID), root: renamed.path)
            } catch { Log.error("store \(name): cannot record its new name in its manifest: \(error)") }
        }
        refreshFigures(target.id!)
        Log.info(
            "job #\(job.id!) done: store \(name) is now \(renamed.kind) \(renamed.path) "
                + "(\(done.doneChunks) chunk(s) copied); the old store's files at \(source.path) are left")
    }

    /// Undoes a replace: the source (which holds every chunk and every write) is the unit's primary
    /// again, then the target's chunks and manifests are removed.
    private func cancelReplace(_ job: JobRecord) throws(TesseraError) {
        guard let unit = job.unitId.map({ UnitID($0) }), let layer = state.withLock({ $0.replacing[unit] }) else {
            throw TesseraError(.catalog, "job #\(job.id!): its placement unit is not being replaced")
        }
        let (source, sourceOpened, target, _, pool) = try replaceParties(job)
        var cancelled = job
        cancelled.state = .cancelled
        try catalog.endReplace(cancelled, unit: unit, keep: source.id!, drop: target.id!, rename: nil)
        pool.layer.serve(unit, with: sourceOpened.top, health: sourceOpened.health)
        state.withLock { s in
            Self.forgetStore(target.id!, &s)
            s.roles[source.id!] = .primary
            s.replacing[unit] = nil
        }
        jobRunner.state.withLock { _ = $0.speed.removeValue(forKey: job.id!) }
        do {
            for c in try layer.targetStore.allChunks() { try layer.targetStore.delete(c) }
            try layer.targetStore.flush()
        } catch {
            Log.error("job #\(job.id!) cancelled; some chunks copied to \(target.path) stay there: \(error)")
        }
        if target.kind == StoreSpec.Kind.dir.rawValue { Manifests.removeAll(root: target.path) }
        Log.info("job #\(job.id!) cancelled: store \(source.name) stays; \(target.path) is no longer a store")
    }
}
