import ArgumentParser
import Foundation
import TesseraControl
import TesseraCore
import TesseraEngine

struct SnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Take, list, delete, revert to and schedule snapshots.",
        subcommands: [Create.self, List.self, Delete.self, Revert.self, Schedule.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Snapshot one or more volumes at one instant (a consistency group).")
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @Argument(help: "Volumes to capture together.") var volumes: [String] = []
        @Option(help: "Snapshot name (shows as MOUNT/.snapshots/NAME, or MOUNT/D/.snapshots/NAME in domain D).")
        var name: String
        @Flag(help: "Capture every volume (of the domain).") var all = false

        func validate() throws {
            try checkName(name, "snapshot")
            if all && !volumes.isEmpty { throw invalid("give volumes or --all, not both") }
            if !all && volumes.isEmpty { throw invalid("give at least one volume, or --all") }
            for v in volumes { try checkName(v, "volume") }
        }

        func run() throws {
            let start = Date()
            let s = try perform(domain.wrap(.snapshotCreate(name: name, volumes: volumes, all: all)), data.directory)
                .snapshots?
                .first
            let ms = Date().timeIntervalSince(start) * 1000
            print("snapshot \(name) of \(s?.volumes.joined(separator: ", ") ?? "?") (\(String(format: "%.1f", ms)) ms)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List snapshots and the space each would free.")
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let snaps = try perform(domain.wrap(.snapshotList), data.directory).snapshots ?? []
            if output.json { return printJSON(snaps) }
            let fmt = DateFormatter()
            fmt.dateFormat = "yyyy-MM-dd HH:mm:ss"
            printTable(
                ["NAME", "CREATED", "VOLUMES", "FREES", "SCHEDULED"],
                snaps.map {
                    [
                        $0.name, fmt.string(from: Date(timeIntervalSince1970: $0.createdAt)),
                        $0.volumes.joined(separator: ","), human($0.freeable), $0.scheduled ? "yes" : "no",
                    ]
                })
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a snapshot; frees what only it held.")
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @Argument var name: String

        func run() throws {
            _ = try perform(domain.wrap(.snapshotDelete(name: name)), data.directory)
            print("deleted snapshot \(name)")
        }
    }

    struct Revert: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bring a volume back to a snapshot (refused while its image is open).")
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @Argument var volume: String
        @Argument var snapshot: String

        func run() throws {
            _ = try perform(domain.wrap(.snapshotRevert(volume: volume, snapshot: snapshot)), data.directory)
            print("reverted \(volume) to \(snapshot)")
        }
    }

    struct Schedule: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Snapshot a volume (or --all) every interval, keeping the newest N; run by the mount.")
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @OptionGroup var output: OutputOptions
        @Argument var volume: String?
        @Flag(help: "Schedule snapshots of every volume together.") var all = false
        @Option(help: "Interval: 30m, 1h, 1d, …") var every: String?
        @Option(help: "How many of this schedule's snapshots to keep.") var keep: Int64?
        @Flag(help: "Remove the schedule.") var remove = false
        @Flag(help: "List schedules.") var list = false

        func validate() throws {
            if list { return }
            if all == (volume != nil) { throw invalid("give a volume or --all") }
            if let volume { try checkName(volume, "volume") }
            if remove { return }
            guard let every, let keep else { throw invalid("--every and --keep are required") }
            _ = try parseInterval(every)
            if keep < 1 { throw invalid("--keep must be at least 1") }
        }

        func run() throws {
            let target = all ? "*" : (volume ?? "")
            let request: ControlRequest
            if list {
                request = .scheduleList
            } else if remove {
                request = .scheduleRemove(target: target)
            } else {
                request = .scheduleSet(target: target, every: try parseInterval(every!), keep: keep!)
            }
            let schedules = try perform(domain.wrap(request), data.directory).schedules ?? []
            if output.json { return printJSON(schedules) }
            printTable(
                ["TARGET", "EVERY", "KEEP", "LAST RUN"],
                schedules.map {
                    [
                        $0.target == "*" ? "(all)" : $0.target, "\($0.everySeconds)s", "\($0.keep)",
                        $0.lastRun.map { Date(timeIntervalSince1970: $0).description } ?? "never",
                    ]
                })
        }
    }
}

/// "90s", "30m", "1h", "2d" → seconds.
func parseInterval(_ text: String) throws -> Int64 {
    let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
    guard let unit = text.last, let mult = units[unit], let n = Int64(text.dropLast()), n > 0, n < 1 << 40 else {
        throw invalid("'\(text)' is not an interval (use e.g. 30m, 1h, 1d)")
    }
    return n * mult
}

struct CloneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clone",
        abstract: "Make a writable volume from SNAPSHOT/VOLUME or a live VOLUME, sharing its chunks (O(1)).")
    @OptionGroup var data: DataOptions
    @OptionGroup var domain: DomainOptions
    @Argument(help: "SNAPSHOT/VOLUME, or VOLUME for its current contents.") var source: String
    @Argument(help: "Name of the new volume.") var name: String

    func validate() throws { try checkName(name, "volume") }

    func run() throws {
        _ = try perform(domain.wrap(.clone(source: source, name: name)), data.directory)
        print("cloned \(source) as \(name)")
    }
}
