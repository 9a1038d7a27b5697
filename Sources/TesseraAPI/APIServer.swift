// The HTTP API (`tessera mount --api HOST:PORT`): REST under /v1 over Hummingbird, bearer tokens of the
// catalog's users (Users.swift), roles and domains judged by Access (TesseraControl). Every route turns
// its request into a ControlRequest and hands it to the same ControlService that serves the control
// socket, so an action has one implementation whichever way it arrives.
//
// Threading: Hummingbird answers on NIO's event loops; the engine's calls block (catalog, flushes), so
// each request runs on a Dispatch worker and the event loop only awaits it. The server runs in one
// Task for the life of the mount; `stop` cancels it.
import Dispatch
import Foundation
import Hummingbird
import Logging
import NIOCore
import TesseraControl
import TesseraCore
import TesseraEngine

public final class APIServer: Sendable {
    private let task: Task<Void, Never>
    /// "HOST:PORT" as bound.
    public let address: String

    private init(task: Task<Void, Never>, address: String) {
        self.task = task
        self.address = address
    }

    /// Splits "HOST:PORT" ("[::1]:PORT" for IPv6).
    public static func parseAddress(_ text: String) throws(TesseraError) -> (host: String, port: Int) {
        let bad = TesseraError(.invalid, "--api: '\(text)' is not HOST:PORT (e.g. 127.0.0.1:8080)")
        guard let colon = text.lastIndex(of: ":") else { throw bad }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else {
            throw bad
        }
        return (host, port)
    }

    /// Binds `address` and serves until `stop`; throws (and serves nothing) when it cannot bind.
    public static func start(address: String, service: ControlService) throws(TesseraError) -> APIServer {
        let (host, port) = try parseAddress(address)
        var logger = Logger(label: "tessera.api")
        logger.logLevel = .warning
        let ready = DispatchSemaphore(value: 0)
        let failure = Lock<String?>(nil)
        let app = Application(
            router: Routes(service: service).router(),
            configuration: .init(address: .hostname(host, port: port), serverName: "tessera", reuseAddress: false),
            onServerRunning: { _ in ready.signal() }, logger: logger)
        let task = Task {
            do {
                try await app.run()
            } catch {
                failure.withLock { $0 = "\(error)" }
            }
            ready.signal()
        }
        if ready.wait(timeout: .now() + 30) == .timedOut {
            task.cancel()
            throw TesseraError(.io, "the API did not start on \(address) in 30 s")
        }
        if let why = failure.withLock({ $0 }) {
            throw TesseraError(.io, "cannot serve the API on \(address): \(why)")
        }
        Log.info("serving the HTTP API on http://\(address)/v1")
        return APIServer(task: task, address: address)
    }

    public func stop() { task.cancel() }
}
