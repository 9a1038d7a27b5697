import ArgumentParser
import Foundation
import TesseraControl
import TesseraCore
import TesseraEngine

/// `--data DIR`, shared by every command.
struct DataOptions: ParsableArguments {
    @Option(name: .long, help: "Data directory (default: $TESSERA_DATA, else /var/lib/tessera as root).")
    var data: String?

    var directory: DataDirectory { DataDirectory.resolve(data) }
}

/// `--domain D`, shared by every command that names volumes, snapshots or schedules.
struct DomainOptions: ParsableArguments {
    @Option(name: .long, help: "The domain to act in (default: the default domain, MOUNT/VOL.img).")
    var domain: String?

    func validate() throws {
        if let domain { try checkName(domain, "domain") }
    }

    /// `request` in the chosen domain (as it is for the default domain).
    func wrap(_ request: ControlRequest) -> ControlRequest {
        guard let domain, domain != Engine.defaultDomain else { return request }
        return .inDomain(domain: domain, request: request)
    }
}

/// `--json`, shared by listings.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false
}

/// Parses a user-typed size for `validate()`.
func parseSize(_ text: String, option: String) throws -> UInt64 {
    do {
        return try ByteSize.parse(text)
    } catch {
        throw invalid("\(option): \(error.description)")
    }
}

func checkName(_ name: String, _ what: String) throws {
    if let problem = Names.problem(with: name, what: what) { throw invalid(problem) }
}

/// Prints the error on one line and exits with its documented code.
func failure(_ any: any Error) -> ExitCode {
    var error = any as? TesseraError ?? TesseraError(.io, "\(any)")
    // The usual reason an admin sees EACCES/EPERM: the data directory, FUSE and loop devices are root's.
    if getuid() != 0 && (error.message.contains("ermission denied") || error.message.contains("not permitted")) {
        error.message += " (Tessera runs as root: use sudo)"
    }
    printError(error.message)
    return ExitCode(error.code.rawValue)
}

/// Bad input found before anything runs: one line, exit 2.
func invalid(_ message: String) -> ExitCode { failure(TesseraError(.invalid, message)) }

/// Set once an error line was printed, so `main` never prints a second one. Only the CLI's main thread
/// touches it (the daemon never reaches these paths).
nonisolated(unsafe) var errorPrinted = false

/// Writes "tessera: MESSAGE" as exactly one line (control characters shown escaped).
func printError(_ message: String) {
    errorPrinted = true
    var line = ""
    for u in message.unicodeScalars {
        if u == "\n" {
            line += "\\n"
        } else if u.value < 0x20 || u.value == 0x7f {
            line += "\\x" + String(u.value, radix: 16)
        } else {
            line.unicodeScalars.append(u)
        }
    }
    FileHandle.standardError.write("tessera: \(line)\n".data(using: .utf8)!)
}

/// Runs a request against the running mount (control socket) or, with none, against the catalog
/// directly; either way through the same ControlService. Throws ExitCode after printing on failure.
func perform(_ request: ControlRequest, _ data: DataDirectory, progress: (Int, Int) -> Void = { _, _ in }) throws
    -> ControlReply
{
    let reply: ControlReply
    do {
        if let remote = try ControlClient.send(request, socketPath: data.socketPath, progress: progress) {
            reply = remote
        } else {
            let engine = try Engine(data)
            reply = ControlService(engine: engine).handle(request, progress: progress)
            do { try engine.flushAll() } catch { throw TesseraError(.io, "flush failed: \(error)") }
        }
    } catch {
        throw failure(error)
    }
    if let error = reply.error { throw failure(error) }
    return reply
}

func printJSON<T: Encodable>(_ value: T) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    let data = (try? encoder.encode(value)) ?? Data("null".utf8)
    print(String(decoding: data, as: UTF8.self))
}

/// A plain text table: a header row, then rows, columns padded to the widest cell.
func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in
            i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
        }
        .joined(separator: "  ")
    }
    print(line(header))
    for r in rows { print(line(r)) }
}

let human = ByteSize.format
