// Locked — a Mutex in a class, so test closures that run on several threads can share one value
// (a Mutex itself is not copyable and cannot be captured by an escaping closure).
//
// Address space: none. Invariant: every access goes through the Mutex.

import Synchronization

public final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    public init(_ value: Value) { mutex = Mutex(value) }
    public func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        try mutex.withLock { (v: inout Value) throws(E) -> R in try body(&v) }
    }
    public var value: Value { mutex.withLock { $0 } }
}
