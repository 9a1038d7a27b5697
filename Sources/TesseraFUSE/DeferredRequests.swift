// DeferredRequests — where throttled requests wait: not on a FUSE worker thread, which another volume
// may need, but in a queue ordered by when each may go. One timer thread hands each request, when its
// time comes, to a small pool of its own threads that does the I/O and replies (libfuse allows a reply
// from any thread). Only requests that must wait come here; the others never touch it.
//
// State (one Lock): the waiting jobs sorted by deadline, and whether the queue stopped. A semaphore wakes
// the timer thread when an earlier deadline arrives or at stop.
// Invariants: a job runs once, on a pool thread, no earlier than its deadline — except at `drain()`
// (the FUSE loop has ended), which runs every waiting job at once so each request still gets its one
// reply before the session goes away; after it, `after` runs the job on the caller's thread.
import Dispatch
import Foundation
import TesseraCore

final class DeferredRequests: Sendable {
    private struct Waiting {
        var deadline: UInt64
        var job: @Sendable () -> Void
    }
    private struct State {
        var waiting: [Waiting] = []
        var stopped = false
        var started = false
    }
    private let state = Lock(State())
    private let wake = DispatchSemaphore(value: 0)
    private let exited = DispatchSemaphore(value: 0)
    /// Threads doing throttled I/O: they only ever serve requests that already waited their turn.
    private let workers = WorkerPool(threads: 8, name: "tessera-qos")

    /// Runs `job` on a pool thread in `seconds`.
    func after(_ seconds: Double, _ job: @escaping @Sendable () -> Void) {
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(max(0, seconds) * 1e9)
        let (queued, first, start) = state.withLock { s -> (Bool, Bool, Bool) in
            guard !s.stopped else { return (false, false, false) }
            let at = s.waiting.partitioningIndex { $0.deadline > deadline }
            s.waiting.insert(Waiting(deadline: deadline, job: job), at: at)
            defer { s.started = true }
            return (true, at == 0, !s.started)
        }
        guard queued else { return job() }
        if start { startTimer() }
        if first { wake.signal() }
    }

    /// Runs every waiting job now and stops; returns when they have all run.
    func drain() {
        let started = state.withLock { s in
            s.stopped = true
            return s.started
        }
        if started {
            wake.signal()
            exited.wait()
        }
        workers.stop()
    }

    private func startTimer() {
        let t = Thread { [self] in
            while true {
                let (due, next, stopped) = state.withLock { s -> ([Waiting], UInt64?, Bool) in
                    let now = DispatchTime.now().uptimeNanoseconds
                    let split = s.stopped ? s.waiting.count : s.waiting.partitioningIndex(where: { $0.deadline > now })
                    let due = Array(s.waiting[..<split])
                    s.waiting.removeFirst(split)
                    return (due, s.waiting.first?.deadline, s.stopped)
                }
                for w in due { workers.submit(w.job) }
                if stopped { break }
                if let next {
                    _ = wake.wait(timeout: DispatchTime(uptimeNanoseconds: next))
                } else {
                    wake.wait()
                }
            }
            exited.signal()
        }
        t.name = "tessera-qos-timer"
        t.start()
    }
}

extension Array {
    /// The first index whose element satisfies `belongsAfter` (the array is partitioned by it).
    fileprivate func partitioningIndex(where belongsAfter: (Element) -> Bool) -> Int {
        var low = 0
        var high = count
        while low < high {
            let mid = (low + high) / 2
            if belongsAfter(self[mid]) { high = mid } else { low = mid + 1 }
        }
        return low
    }
}
