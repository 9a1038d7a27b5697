// WorkerPool — runs submitted jobs on at most `threads` plain threads, so at most that many run at once.
//
// For blocking I/O that gains from running side by side (the cache writing chunks back to an object
// store), on the data path's terms: plain threads, no Task or await, one short lock.
// State (one Lock): the FIFO of waiting jobs, how many threads exist, how many jobs are queued or
// running, and whether the pool stopped. A semaphore counts the wake-ups owed to the threads: one per
// queued job, one per thread at stop.
// Invariants:
// - At most `threads` jobs run at once, in submission order of their start.
// - A thread starts only when a job arrives and every existing thread is busy (none before the first
//   job); threads then stay, idle, until `stop()` or the pool goes away.
// - After `stop()` no thread is left, every job queued before it has run, and `submit` runs the job on
//   the caller's thread.
// The threads hold the pool's core, not the pool: the pool going away (possibly on one of its own
// threads, when a job held the last reference to its owner) ends them without waiting for them.
import Dispatch
import Foundation

public final class WorkerPool: Sendable {
    /// Most jobs running at once.
    public let threads: Int
    private let core: Core

    /// - Parameters:
    ///   - threads: most jobs running at once (≥ 1).
    ///   - name: the threads' name, as `ps -L` and debuggers show it.
    public init(threads: Int, name: String) {
        precondition(threads >= 1, "a pool needs a thread")
        self.threads = threads
        core = Core(name: name)
    }

    deinit { core.shut() }

    /// Queues `job` and returns at once; it runs on a pool thread when one is free. After `stop()`, runs it
    /// here instead.
    public func submit(_ job: @escaping @Sendable () -> Void) {
        let (queued, spawn) = core.state.withLock { s -> (Bool, Bool) in
            guard !s.stopped else { return (false, false) }
            s.jobs.append(job)
            s.busy += 1
            guard s.busy > s.threads && s.threads < threads else { return (true, false) }
            s.threads += 1
            core.exited.enter()
            return (true, true)
        }
        guard queued else { return job() }
        if spawn { core.startThread() }
        core.wake.signal()
    }

    /// Runs the jobs already queued, then ends the threads and waits for them. Not from a pool thread.
    public func stop() {
        core.shut()
        core.exited.wait()
    }

    private final class Core: Sendable {
        struct State {
            /// Taken jobs are set to nil at once: a job may hold its submitter, which may own the pool.
            var jobs: [(@Sendable () -> Void)?] = []
            var head = 0
            var threads = 0
            var busy = 0
            var stopped = false
        }
        let state = Lock(State())
        let wake = DispatchSemaphore(value: 0)
        let exited = DispatchGroup()
        let name: String

        init(name: String) { self.name = name }

        func startThread() {
            let thread = Thread { [self] in
                while let job = next() {
                    job()
                    state.withLock { $0.busy -= 1 }
                }
                exited.leave()
            }
            thread.name = name
            thread.start()
        }

        /// The next job, waiting for one; nil once the pool stopped and no job is left.
        private func next() -> (@Sendable () -> Void)? {
            while true {
                wake.wait()
                let job = state.withLock { s -> (@Sendable () -> Void)?? in
                    guard s.head < s.jobs.count else { return s.stopped ? .some(nil) : nil }
                    let job = s.jobs[s.head]
                    s.jobs[s.head] = nil
                    s.head += 1
                    if s.head == s.jobs.count {
                        s.jobs.removeAll(keepingCapacity: true)
                        s.head = 0
                    }
                    return job
                }
                if let job { return job }
            }
        }

        /// Stops taking jobs and wakes every thread to finish the queue and end. Idempotent.
        func shut() {
            let threads = state.withLock { s in
                defer { s.stopped = true }
                return s.stopped ? 0 : s.threads
            }
            for _ in 0..<threads { wake.signal() }
        }
    }
}
