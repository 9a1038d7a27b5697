// Health — the store health checker, and the store figures that `store list/show`, `pool show`,
// `status` and the mount's statfs serve without ever waiting on a dead store.
//
// Checker: while mounted, one thread per store probes it (StoreMaintenance.probe: a small file written,
// synced and removed; a HEAD of the bucket) every `interval` (10 s; 5 s while it is unreachable). A
// failed probe marks the store unreachable (as a failed request on the data path does, in PoolLayer);
// a successful probe of an unreachable store makes it drop what the outage left dead (reopen) and
// returns it to service. Each successful probe also refreshes the store's figures and its placement
// estimate, every third one (about every 30 s) or at once after a recovery.
// Figures: read on a worker thread and kept per store (FigureCache). A request waits at most
// `figuresWait` for fresh figures of a reachable store and otherwise answers with the last ones it has;
// an unreachable store is never asked (its last figures are served, with their age).
// Lock order: FigureCache's and HealthChecker's Mutexes are leaves (never held across I/O or another lock).
import Dispatch
import Foundation
import Synchronization
import TesseraCore

/// The last figures read from one store.
struct StoreFigures: Sendable {
    var usage: StoreUsage
    var chunks: Int
    var sampledLogical: UInt64?
    var sampledStored: UInt64?
    /// Seconds since 1970 when they were read.
    var at: Double
}

/// Figures per store, and the reads in flight (so that a slow store is read once, not once per caller).
final class FigureCache: Sendable {
    private struct Entry {
        var figures: StoreFigures?
        var flight: Flight?
    }
    /// One read in flight; callers wait on its semaphore-like condition with a deadline.
    final class Flight: Sendable {
        private let done = Mutex(false)
        private let condition = DispatchSemaphore(value: 0)
        func finish() {
            done.withLock { $0 = true }
            condition.signal()
        }
        /// Waits until the read ended or `timeout` passed; true when it ended.
        func wait(_ timeout: Double) -> Bool {
            if done.withLock({ $0 }) { return true }
            if condition.wait(timeout: .now() + timeout) == .success {
                condition.signal()  // let the next waiter through too
                return true
            }
            return false
        }
    }
    private let entries = Mutex<[Int64: Entry]>([:])

    func figures(_ id: Int64) -> StoreFigures? { entries.withLock { $0[id]?.figures } }

    /// The running read of `id`, or a new one that `start` runs on a worker thread.
    func flight(_ id: Int64, start: @escaping @Sendable () -> StoreFigures?) -> Flight {
        let (flight, isNew) = entries.withLock { e -> (Flight, Bool) in
            if let f = e[id]?.flight { return (f, false) }
            let f = Flight()
            e[id, default: Entry()].flight = f
            return (f, true)
        }
        if isNew {
            DispatchQueue.global().async {
                let fresh = start()
                self.entries.withLock { e in
                    if let fresh {
                        var keep = fresh
                        // A read without sampling keeps the last sampled ratio.
                        if keep.sampledLogical == nil, let old = e[id]?.figures {
                            keep.sampledLogical = old.sampledLogical
                            keep.sampledStored = old.sampledStored
                        }
                        e[id, default: Entry()].figures = keep
                    }
                    e[id]?.flight = nil
                }
                flight.finish()
            }
        }
        return flight
    }
}

/// Which stores have a checker thread, and whether they should stop.
final class HealthChecker: Sendable {
    struct State {
        var running = false
        var stopped = false
        var threads: Set<Int64> = []
    }
    let state = Mutex(State())
}

extension Engine {
    /// Probe period of a store in service; an unreachable store is probed twice as often.
    static let healthInterval = 10.0
    /// How long a request waits for fresh figures of a reachable store before serving the last ones.
    static let figuresWait = 2.0

    /// Starts probing every store (the mount calls it); stores added later get a checker at once.
    public func startHealthChecks() {
        let ids = state.withLock { Array($0.stores.keys) }
        checker.state.withLock { $0.running = true }
        for id in ids { startHealthCheck(id) }
    }

    public func stopHealthChecks() { checker.state.withLock { $0.stopped = true } }

    /// Starts the checker thread of store `id` (when checks are running and it has none).
    func startHealthCheck(_ id: Int64) {
        let start = checker.state.withLock { c -> Bool in
            guard c.running, !c.stopped, !c.threads.contains(id) else { return false }
            c.threads.insert(id)
            return true
        }
        guard start else { return }
        let t = Thread { [weak self] in
            var round = 0
            while true {
                guard let self, !self.checker.state.withLock({ $0.stopped }) else { return }
                guard self.state.withLock({ $0.stores[id] != nil }) else {  // removed from the catalog
                    self.checker.state.withLock { _ = $0.threads.remove(id) }
                    return
                }
                let reachable = self.probe(id, refresh: round % 3 == 0)
                round += 1
                let pause = reachable ? Self.healthInterval : Self.healthInterval / 2
                var slept = 0.0
                while slept < pause {  // short naps, so that stop is prompt
                    Thread.sleep(forTimeInterval: 0.5)
                    slept += 0.5
                    if self.checker.state.withLock({ $0.stopped }) { return }
                }
            }
        }
        t.name = "tessera-health-\(id)"
        t.start()
    }

    /// Probes store `id` once and updates its health; returns whether it answers.
    @discardableResult
    func probe(_ id: Int64, refresh: Bool) -> Bool {
        guard let (record, opened) = state.withLock({ s in s.stores[id].flatMap { r in s.opened[id].map { (r, $0) } } })
        else { return false }
        do throws(StoreError) {
            if let m = opened.bottom as? StoreMaintenance { try m.probe() } else { _ = try opened.top.usage() }
        } catch {
            if opened.health.markUnreachable(StoreHealth.describe(error)) {
                Log.error(
                    "store \(record.name) is unreachable (\(error)); it takes no new chunks until it answers again")
            }
            return false
        }
        if !opened.health.isReachable {
            (opened.bottom as? StoreMaintenance)?.reopen()
            opened.health.markReachable()
            Log.info("store \(record.name) answers again: back in service")
            refreshFigures(id)
        } else if refresh {
            refreshFigures(id)
        }
        return true
    }

    /// Reads store `id`'s figures on a worker thread (no wait) and feeds its pool's placement estimate.
    func refreshFigures(_ id: Int64) { _ = figureFlight(id, sample: 0) }

    private func figureFlight(_ id: Int64, sample: Int) -> FigureCache.Flight? {
        guard
            let (record, opened, layer, unit) = state.withLock({ s in
                s.stores[id].flatMap { r in
                    s.opened[id].flatMap { o in
                        s.pools[r.poolId].map { (r, o, $0.layer, s.roles[id] == .primary ? s.unitOf[id] : nil) }
                    }
                }
            })
        else { return nil }
        return figureCache.flight(id) {
            do throws(StoreError) {
                let usage = try opened.top.usage()
                let chunks = try opened.top.allChunks().count
                var f = StoreFigures(usage: usage, chunks: chunks, at: Date().timeIntervalSince1970)
                if let c = opened.compression, sample > 0 {
                    let r = try c.ratio(sample: sample)
                    f.sampledLogical = r.logical
                    f.sampledStored = r.stored
                }
                // A unit's one store: its room is the unit's (while replaced, the ReplaceLayer answers).
                if let unit { layer.updateCapacity(unit, usage) }
                return f
            } catch {
                if StoreHealth.isOutage(error), opened.health.markUnreachable(StoreHealth.describe(error)) {
                    Log.error(
                        "store \(record.name) is unreachable (\(error)); it takes no new chunks until it answers again")
                }
                Log.error("store \(record.name): cannot read its figures: \(error)")
                return nil
            }
        }
    }

    /// Store `id`'s figures: fresh ones when the store answers within `figuresWait`, else the last read
    /// (nil when it never answered). An unreachable store is not asked.
    func figures(_ id: Int64, health: StoreHealth, sample: Int = 0) -> StoreFigures? {
        // Without a mount (the CLI's in-process path) nothing refreshes figures later: wait for them.
        let wait = checker.state.withLock { $0.running } ? Self.figuresWait : 3600
        guard health.isReachable else { return figureCache.figures(id) }
        if let flight = figureFlight(id, sample: sample), flight.wait(wait), sample > 0,
            figureCache.figures(id)?.sampledLogical == nil, let again = figureFlight(id, sample: sample)
        {
            _ = again.wait(wait)  // the read that was in flight did not sample: once more, sampling
        }
        return figureCache.figures(id)
    }
}
