import ArgumentParser
import Foundation
import TesseraCore
import TesseraEngine

struct QoSCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qos", abstract: "Cap volumes' I/O (per volume, per pool, or for all volumes).",
        discussion: """
            Caps are token buckets (qemu's throttle semantics): a sustained rate, plus with --burst S an \
            allowance of S seconds of the rate that an idle volume may spend at full speed. A request counts \
            as one operation per 64K (large requests count by size as well as by count). A volume is held to \
            its own caps, its pool's (shared by all the pool's volumes, like a qemu throttle group) and \
            those set with --all. Changes apply at once to a running mount and persist in the catalog.
            """,
        subcommands: [Set.self, Show.self, Clear.self])

    /// VOL… | --pool POOL | --all, for `set` and `clear`.
    struct Target: ParsableArguments {
        @Argument(help: "Volumes to act on.") var volumes: [String] = []
        @Option(help: "Act on a pool's group: its volumes share one set of caps.") var pool: String?
        @Flag(help: "Act on the group of all volumes (they share one set of caps).") var all = false

        func validate() throws {
            let given = (volumes.isEmpty ? 0 : 1) + (pool == nil ? 0 : 1) + (all ? 1 : 0)
            if given != 1 { throw ValidationError("give volume names, or --pool POOL, or --all (exactly one)") }
            for v in volumes { try checkName(v, "volume") }
            if let pool { try checkName(pool, "pool") }
        }

        var target: QoSTarget {
            if let pool { return .pool(pool) }
            return all ? .all : .volumes(volumes)
        }
    }

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set caps, burst, floors or weight; settings not named keep their value.",
            discussion: """
                Rates are whole numbers above 0; bandwidths are sizes per second (K, M, G: powers of 1024). \
                --min-iops, --min-bps and --weight are per volume and recorded, but not enforced by this \
                release. Exit 2 for bad input, 3 for an unknown volume or pool; nothing changes then.
                """)
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @OptionGroup var target: Target
        @Option(parsing: .unconditional, help: "Operations per second (reads and writes).") var iops: String?
        @Option(parsing: .unconditional, help: "Read operations per second.") var readIops: String?
        @Option(parsing: .unconditional, help: "Write operations per second.") var writeIops: String?
        @Option(parsing: .unconditional, help: "Bytes per second, e.g. 100M (reads and writes).") var bps: String?
        @Option(parsing: .unconditional, help: "Read bytes per second.") var readBps: String?
        @Option(parsing: .unconditional, help: "Write bytes per second.") var writeBps: String?
        @Option(parsing: .unconditional, help: "Seconds of each cap an idle volume may burst (default 0.1).")
        var burst: String?
        @Option(parsing: .unconditional, help: "Guaranteed operations per second (recorded; not enforced yet).")
        var minIops: String?
        @Option(parsing: .unconditional, help: "Guaranteed bytes per second (recorded; not enforced yet).")
        var minBps: String?
        @Option(parsing: .unconditional, help: "Share under contention, 1…1000 (recorded; not enforced yet).")
        var weight: String?

        /// Each value on its own; the rules between settings (a burst needs a cap, a floor under the cap)
        /// are checked by the engine against the settings they join.
        func validate() throws {
            if try limits().isEmpty { throw invalid("give at least one setting (--iops, --bps, --burst, …)") }
        }

        func limits() throws -> QoSLimits {
            func count(_ text: String?, _ option: String) throws -> UInt64? {
                guard let text else { return nil }
                guard let n = UInt64(text), n > 0 else {
                    throw invalid("\(option): '\(text)' is not a whole number greater than 0")
                }
                return n
            }
            func rate(_ text: String?, _ option: String) throws -> UInt64? {
                guard let text else { return nil }
                let n = try parseSize(text, option: option)
                if n == 0 { throw invalid("\(option) must be greater than 0") }
                return n
            }
            var l = QoSLimits(
                iops: try count(iops, "--iops"), readIops: try count(readIops, "--read-iops"),
                writeIops: try count(writeIops, "--write-iops"), bps: try rate(bps, "--bps"),
                readBps: try rate(readBps, "--read-bps"), writeBps: try rate(writeBps, "--write-bps"),
                minIops: try count(minIops, "--min-iops"), minBps: try rate(minBps, "--min-bps"))
            if let burst {
                guard let s = Double(burst), s.isFinite, s > 0, s <= QoSLimits.maxBurst else {
                    throw invalid("--burst: '\(burst)' is not a number of seconds above 0 and at most 3600")
                }
                l.burst = s
            }
            if let weight {
                guard let w = Int(weight), (1...1000).contains(w) else {
                    throw invalid("--weight: '\(weight)' is not a whole number from 1 to 1000")
                }
                l.weight = w
            }
            return l
        }

        func run() throws {
            let report = try perform(domain.wrap(.qosSet(target: target.target, limits: try limits())), data.directory)
                .qos
            print("QoS set for \(describe(target.target))")
            if let report { QoSCommand.printReport(report, only: target.target) }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show QoS settings, current rates and time spent throttled (all volumes, or one).",
            discussion: """
                RATE is the last whole second's operations and bytes per second, measured on volumes under a \
                cap (an unlimited volume is not metered: it costs nothing). THROTTLED is the time during \
                which at least one of its requests waited, since the mount started.
                """)
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @OptionGroup var output: OutputOptions
        @Argument(help: "One volume (default: every volume of the domain).") var volume: String?

        func validate() throws { if let volume { try checkName(volume, "volume") } }

        func run() throws {
            guard let report = try perform(domain.wrap(.qosShow(volume: volume)), data.directory).qos else { return }
            if output.json { return printJSON(report) }
            QoSCommand.printReport(report, only: nil)
        }
    }

    struct Clear: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove every QoS setting of volumes, of a pool's group (--pool) or of all volumes (--all).")
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @OptionGroup var target: Target

        func run() throws {
            _ = try perform(domain.wrap(.qosClear(target: target.target)), data.directory)
            print("QoS cleared for \(describe(target.target))")
        }
    }

    static func printReport(_ report: QoSReport, only: QoSTarget?) {
        for g in report.groups { print("group \(g.group): \(g.settings.summary)") }
        var volumes = report.volumes
        if case .volumes(let names) = only { volumes = volumes.filter { names.contains($0.volume) } }
        printTable(
            ["VOLUME", "POOL", "SETTINGS", "GROUPS", "RATE", "THROTTLED"],
            volumes.map { v in
                let metered = v.settings?.hasCaps == true || !v.groups.isEmpty
                return [
                    v.volume, v.pool, v.settings?.summary ?? "-",
                    v.groups.isEmpty ? "-" : v.groups.joined(separator: ","),
                    metered ? "\(Int(v.stats.opsPerSecond)) IOPS \(human(UInt64(v.stats.bytesPerSecond)))/s" : "-",
                    metered ? String(format: "%.1fs", v.stats.throttledSeconds) : "-",
                ]
            })
    }
}

private func describe(_ target: QoSTarget) -> String {
    switch target {
    case .volumes(let names): names.joined(separator: ", ")
    case .pool(let name): "pool \(name)"
    case .all: "all volumes"
    }
}

extension QoSLimits {
    /// "iops=500 bps=10M burst=5s …", the set fields only.
    var summary: String {
        var parts: [String] = []
        for (name, value) in [
            ("iops", iops), ("read-iops", readIops), ("write-iops", writeIops), ("min-iops", minIops),
        ] {
            if let value { parts.append("\(name)=\(value)") }
        }
        for (name, value) in [("bps", bps), ("read-bps", readBps), ("write-bps", writeBps), ("min-bps", minBps)] {
            if let value { parts.append("\(name)=\(human(value))") }
        }
        if let burst { parts.append("burst=\(burst)s") }
        if let weight { parts.append("weight=\(weight)") }
        return parts.joined(separator: " ")
    }
}
