// Threads — runs a body on N real OS threads at once and waits for all of them. The data path is
// synchronous and runs on many threads (libfuse's workers); tests that want true parallelism use this,
// not Swift tasks, which may share one thread.
//
// Address space: none. Invariants: every thread has started before any runs its body (a start
// barrier, so they really overlap); `run` returns only after every body has returned.

import Foundation

public enum Threads {
    /// Calls `body(i)` for i in 0..<count, each on its own thread, concurrently.
    public static func run(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let group = DispatchGroup()
        let start = DispatchSemaphore(value: 0)
        for i in 0..<count {
            group.enter()
            let t = Thread {
                start.wait()
                body(i)
                group.leave()
            }
            t.stackSize = 4 << 20
            t.start()
        }
        for _ in 0..<count { start.signal() }
        group.wait()
    }
}
