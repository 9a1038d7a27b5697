// Where throttled FUSE requests wait: each job runs once, not before its time, in deadline order
// whatever the order they were queued in; drain runs every waiting job at once (the loop has ended and
// each request still needs its reply), and a job queued after that runs on the caller's thread.
import Dispatch
import Foundation
import Synchronization
import Testing

@testable import TesseraFUSE

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct DeferredRequestsTests {
    @Test func jobsRunOnceNotBeforeTheirTimeInDeadlineOrder() {
        let queue = DeferredRequests()
        let ran = Mutex<[(Int, Double)]>([])
        let done = DispatchGroup()
        let start = Date()
        for (i, delay) in [(0, 0.3), (1, 0.1), (2, 0.2), (3, 0.0)] {
            done.enter()
            queue.after(delay) {
                ran.withLock { $0.append((i, Date().timeIntervalSince(start))) }
                done.leave()
            }
        }
        #expect(done.wait(timeout: .now() + 10) == .success)
        let order = ran.withLock { $0 }
        #expect(order.map { $0.0 } == [3, 1, 2, 0])
        for (i, at) in order {
            let delay = [0.3, 0.1, 0.2, 0.0][i]
            #expect(at >= delay - 0.01, "job \(i) ran at \(at), due at \(delay)")
        }
        queue.drain()
    }

    @Test func drainRunsWhatWaitsAtOnceThenRunsJobsInline() {
        let queue = DeferredRequests()
        let count = Mutex(0)
        for _ in 0..<20 { queue.after(60) { count.withLock { $0 += 1 } } }
        let start = Date()
        queue.drain()
        #expect(count.withLock { $0 } == 20)
        #expect(Date().timeIntervalSince(start) < 10)
        let here = pthread_self()
        let sameThread = Mutex(false)
        queue.after(5) { sameThread.withLock { $0 = pthread_equal(pthread_self(), here) != 0 } }
        #expect(sameThread.withLock { $0 })
    }
}
