import ArgumentParser
import Foundation

@main
struct Tessera: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tessera",
        abstract: "Thin virtual volumes as raw image files in a FUSE mount.",
        version: tesseraVersion,
        subcommands: [
            InitCommand.self, MountCommand.self, UnmountCommand.self, StatusCommand.self, PoolCommand.self,
            StoreCommand.self, VolumeCommand.self, SnapshotCommand.self, CloneCommand.self, DomainCommand.self,
            FsckCommand.self, ScrubCommand.self, QoSCommand.self, CDPCommand.self, JobCommand.self, UserCommand.self,
        ])

    /// Every error ends as one line on stderr: ours carry their exit code (ExitCode, printed already);
    /// the argument parser's usage errors are folded to their first line and exit 64.
    static func main() {
        S3Setup.register()
        do {
            try refuseRepeatedOptions(Array(CommandLine.arguments.dropFirst()))
            var command = try parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }  // --help, --version
            if errorPrinted { Foundation.exit(code.rawValue) }
            let first = message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            printError(first.hasPrefix("Error: ") ? String(first.dropFirst(7)) : first)
            Foundation.exit(code.rawValue)
        }
    }

    /// Options that may be given more than once; every other `--option` given twice is refused rather
    /// than letting the last one win silently.
    static let repeatable: Set<String> = ["--store"]

    static func refuseRepeatedOptions(_ args: [String]) throws {
        var seen = Set<String>()
        for arg in args {
            if arg == "--" { break }
            guard arg.hasPrefix("--") else { continue }
            let name = String(arg.split(separator: "=", maxSplits: 1)[0])
            if !repeatable.contains(name) && !seen.insert(name).inserted {
                throw invalid("option \(name) is given more than once")
            }
        }
    }
}
