import ArgumentParser
import Foundation
import TesseraControl
import TesseraCore
import TesseraEngine

struct CDPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cdp",
        abstract: "Continuous data protection: every instant of a window, as MOUNT/.cdp/VOL@TIME.img.",
        subcommands: [Enable.self, Disable.self, Status.self, Mark.self, Restore.self])

    struct Enable: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start journaling every write of a volume, so that any instant of the window can be read back.")
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @Argument(help: "The volume to protect.") var volume: String
        @Option(help: "How far back instants are kept: 10s … 3650d (30m, 24h, 7d …).") var window = "24h"
        @Option(help: "Most journal bytes kept (K M G T); past it the oldest instants go first.") var maxSize: String?

        func validate() throws {
            try checkName(volume, "volume")
            let seconds = try parseInterval(window)
            if seconds < Engine.minWindow || seconds > Engine.maxWindow {
                throw invalid("--window must be between 10s and 3650d")
            }
            if let maxSize {
                let size = try parseSize(maxSize, option: "--max-size")
                if size < Engine.minCDPSize || size > Engine.maxVolumeSize {
                    throw invalid("--max-size must be between 1M and 1P")
                }
            }
        }

        func run() throws {
            let size = try maxSize.map { try parseSize($0, option: "--max-size") }
            let reply = try perform(
                domain.wrap(.cdpEnable(volume: volume, window: try parseInterval(window), maxSize: size)),
                data.directory)
            let start = reply.cdp?.first?.windowStart ?? "?"
            print(
                "protecting \(volume) (window \(window)\(maxSize.map { ", max \($0)" } ?? "")); first instant \(start)")
        }
    }

    struct Disable: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop protecting a volume and free its journal, bases and marks.")
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @Argument var volume: String

        func run() throws {
            _ = try perform(domain.wrap(.cdpDisable(volume: volume)), data.directory)
            print("cdp disabled for \(volume); its journal is freed")
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Window start and end, retained bytes, bytes per hour, marks and warnings of protected volumes.")
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "One volume (default: every protected volume of the domain).") var volume: String?

        func run() throws {
            let infos = try perform(domain.wrap(.cdpStatus(volume: volume)), data.directory).cdp ?? []
            if output.json { return printJSON(infos) }
            printTable(
                ["VOLUME", "WINDOW START", "WINDOW END", "RETAINED", "PER HOUR", "MAX", "MARKS"],
                infos.map {
                    [
                        $0.volume, $0.windowStart, $0.windowEnd, human($0.retainedBytes), human($0.bytesPerHour),
                        $0.maxSize.map(human) ?? "-", "\($0.marks.count)",
                    ]
                })
            for i in infos {
                for m in i.marks { print("mark \(i.volume)@\(m.name) = \(m.time)") }
                for w in i.warnings { print("warning: \(i.volume): \(w)") }
            }
        }
    }

    struct Mark: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Name the current instant of a protected volume (MOUNT/.cdp/VOL@NAME.img).")
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @Argument var volume: String
        @Argument var name: String

        func validate() throws {
            try checkName(name, "mark")
            if name.contains("@") { throw invalid("a mark name may not contain '@'") }
        }

        func run() throws {
            let mark = try perform(domain.wrap(.cdpMark(volume: volume, name: name)), data.directory).cdp?.first?.marks
                .first
            print("marked \(volume)@\(name) at \(mark?.time ?? "?")")
        }
    }

    struct Restore: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bring a volume back to an instant: as a new volume (--as), or in place (refused while open).")
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @Argument var volume: String
        @Option(help: "The instant, RFC 3339 (2026-12-02T11:20:05Z, fractions and offsets allowed).") var at: String?
        @Option(help: "The instant a mark names.") var mark: String?
        @Option(name: .customLong("as"), help: "Make a new volume of that name instead of changing VOLUME.")
        var newName: String?

        func validate() throws {
            if (at == nil) == (mark == nil) { throw invalid("give --at TIME or --mark NAME") }
            if let at, CDPTime.parse(at) == nil {
                throw invalid("'\(at)' is not an RFC 3339 time (such as 2026-12-02T11:20:05Z)")
            }
            if let newName { try checkName(newName, "volume") }
        }

        func run() throws {
            let spec = at ?? mark!
            _ = try perform(domain.wrap(.cdpRestore(volume: volume, at: spec, as: newName)), data.directory)
            if let newName {
                print("restored \(volume) as it was at \(spec) as \(newName)")
            } else {
                print("restored \(volume) in place to \(spec)")
            }
        }
    }
}
