import ArgumentParser
import Foundation
import TesseraControl
import TesseraEngine

struct DomainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "domain", abstract: "Create, inspect, change and delete domains (namespaces with quotas).",
        discussion: """
            A domain holds volumes, snapshots and schedules whose names are unique within it; commands act \
            in one with --domain D. Its volumes are MOUNT/D/VOL.img and its snapshots \
            MOUNT/D/.snapshots/SNAP/VOL.img; the default domain keeps MOUNT/VOL.img.
            """,
        subcommands: [Create.self, List.self, Show.self, Set.self, Delete.self])

    /// The quota and policy options of `create` and `set`.
    struct Limits: ParsableArguments {
        @Option(help: "Most volumes the domain may hold.") var quotaVolumes: Int64?
        @Option(help: "Most virtual size its volumes may add up to (e.g. 10T).") var quotaSize: String?
        @Option(help: "Most snapshots the domain may hold.") var quotaSnapshots: Int64?
        @Option(help: "Pools its volumes may use, comma-separated (new volumes go to the one with most room).")
        var pools: String?

        func validate() throws {
            if let quotaVolumes, quotaVolumes < 0 { throw invalid("--quota-volumes must be 0 or more") }
            if let quotaSnapshots, quotaSnapshots < 0 { throw invalid("--quota-snapshots must be 0 or more") }
            if let quotaSize { _ = try parseSize(quotaSize, option: "--quota-size") }
            for p in try poolList() ?? [] { try checkName(p, "pool") }
        }

        func poolList() throws -> [String]? {
            guard let pools else { return nil }
            let names = pools.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            if names.contains("") { throw invalid("--pools: '\(pools)' is not a comma-separated list of pools") }
            return names
        }

        /// The settings given (nil for what was not).
        func settings() throws -> DomainSettings {
            DomainSettings(
                quotaVolumes: quotaVolumes, quotaSize: try quotaSize.map { try parseSize($0, option: "--quota-size") },
                quotaSnapshots: quotaSnapshots, pools: try poolList())
        }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a domain, with optional quotas and the pools its volumes may use.",
            discussion: """
                The name follows the rules of volume names (no '/', no leading '.', not ending in .img), so \
                that MOUNT/NAME never collides with an image or .snapshots.
                """)
        @OptionGroup var data: DataOptions
        @Argument var name: String
        @OptionGroup var limits: Limits

        func validate() throws { try checkName(name, "domain") }

        func run() throws {
            let d = try perform(.domainCreate(name: name, settings: try limits.settings()), data.directory).domains?
                .first
            print("created domain \(name)\(d.map { describeLimits($0) } ?? "")")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List domains with what each holds.")
        @OptionGroup var data: DataOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let domains = try perform(.domainList, data.directory).domains ?? []
            if output.json { return printJSON(domains) }
            printTable(
                ["NAME", "VOLUMES", "PROVISIONED", "ALLOCATED", "SNAPSHOTS", "POOLS"],
                domains.map { d in
                    [
                        d.name, count(d.volumes, d.quotaVolumes),
                        d.quotaSize.map { "\(human(d.provisioned)) of \(human($0))" } ?? human(d.provisioned),
                        human(d.allocated), count(d.snapshots, d.quotaSnapshots),
                        d.pools?.joined(separator: ",") ?? "(any)",
                    ]
                })
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one domain: quotas, use and pools.")
        @OptionGroup var data: DataOptions
        @OptionGroup var output: OutputOptions
        @Argument var name: String

        func validate() throws { try checkName(name, "domain") }

        func run() throws {
            guard let d = try perform(.domainShow(name: name), data.directory).domains?.first else { return }
            if output.json { return printJSON(d) }
            print(
                """
                name:        \(d.name)
                volumes:     \(count(d.volumes, d.quotaVolumes))
                provisioned: \(human(d.provisioned))\(d.quotaSize.map { " of \(human($0))" } ?? " (no quota)")
                allocated:   \(human(d.allocated))
                snapshots:   \(count(d.snapshots, d.quotaSnapshots))
                schedules:   \(d.schedules)
                pools:       \(d.pools?.joined(separator: ", ") ?? "(any)")
                """)
        }
    }

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change a domain's quotas or pools (--no-quota-…, --any-pool to clear).",
            discussion: """
                A quota below what the domain holds now is accepted: it refuses only what would add more.
                """)
        @OptionGroup var data: DataOptions
        @Argument var name: String
        @OptionGroup var limits: Limits
        @Flag(help: "Remove the volume quota.") var noQuotaVolumes = false
        @Flag(help: "Remove the size quota.") var noQuotaSize = false
        @Flag(help: "Remove the snapshot quota.") var noQuotaSnapshots = false
        @Flag(help: "Let its volumes use any pool.") var anyPool = false

        func validate() throws {
            try checkName(name, "domain")
            for (flag, given, cleared) in [
                ("quota-volumes", limits.quotaVolumes != nil, noQuotaVolumes),
                ("quota-size", limits.quotaSize != nil, noQuotaSize),
                ("quota-snapshots", limits.quotaSnapshots != nil, noQuotaSnapshots),
            ] where given && cleared {
                throw invalid("give --\(flag) or --no-\(flag), not both")
            }
            if anyPool && limits.pools != nil { throw invalid("give --pools or --any-pool, not both") }
            let settings = try limits.settings()
            if settings == DomainSettings() && !(noQuotaVolumes || noQuotaSize || noQuotaSnapshots || anyPool) {
                throw invalid("nothing to change: give a quota, --pools, or one of the --no-… flags")
            }
        }

        func run() throws {
            var s = try limits.settings()
            if noQuotaVolumes { s.clear.insert(.quotaVolumes) }
            if noQuotaSize { s.clear.insert(.quotaSize) }
            if noQuotaSnapshots { s.clear.insert(.quotaSnapshots) }
            if anyPool { s.clear.insert(.pools) }
            let d = try perform(.domainSet(name: name, settings: s), data.directory).domains?.first
            print("changed domain \(name)\(d.map { describeLimits($0) } ?? "")")
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete an empty domain (refused while it holds volumes, snapshots or schedules).")
        @OptionGroup var data: DataOptions
        @Argument var name: String

        func validate() throws { try checkName(name, "domain") }

        func run() throws {
            _ = try perform(.domainDelete(name: name), data.directory)
            print("deleted domain \(name)")
        }
    }
}

/// "3" or "3 of 10".
private func count(_ n: Int, _ quota: Int64?) -> String { quota.map { "\(n) of \($0)" } ?? "\(n)" }

/// ": quota 10 volumes, 1T, 5 snapshots; pools a, b" (empty when it has neither).
private func describeLimits(_ d: DomainInfo) -> String {
    let quotas = [
        d.quotaVolumes.map { "\($0) volumes" }, d.quotaSize.map { human($0) },
        d.quotaSnapshots.map { "\($0) snapshots" },
    ].compactMap { $0 }
    var parts: [String] = []
    if !quotas.isEmpty { parts.append("quota " + quotas.joined(separator: ", ")) }
    if let pools = d.pools { parts.append("pools " + pools.joined(separator: ", ")) }
    return parts.isEmpty ? "" : ": " + parts.joined(separator: "; ")
}
