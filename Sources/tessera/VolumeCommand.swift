import ArgumentParser
import TesseraControl
import TesseraEngine

struct VolumeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "volume", abstract: "Create, inspect, resize and delete volumes.",
        subcommands: [Create.self, List.self, Show.self, Resize.self, Delete.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a thin volume (with --count N: NAME-1 … NAME-N, all or none).")
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @Argument var name: String
        @Option(help: "Virtual size in whole 512-byte sectors, e.g. 40G (truncate may later make any size).")
        var size: String
        @Option(
            help: "Pool to carve it from (default: the domain's allowed pool with the most free room, else 'default').")
        var pool: String?
        @Option(help: "Create NAME-1 … NAME-N in one transaction.") var count: Int?

        func validate() throws {
            try checkName(name, "volume")
            if let pool { try checkName(pool, "pool") }
            let bytes = try parseSize(size, option: "--size")
            do { try Engine.checkSectorSize(bytes) } catch { throw invalid(error.message) }
            if let count, count < 1 || count > 10_000 { throw invalid("--count must be between 1 and 10000") }
        }

        func run() throws {
            let reply = try perform(
                domain.wrap(
                    .volumeCreate(name: name, size: try parseSize(size, option: "--size"), pool: pool, count: count)),
                data.directory)
            for v in reply.volumes ?? [] {
                let domain = v.domain.flatMap { $0 == Engine.defaultDomain ? nil : ", domain \($0)" } ?? ""
                print("created \(v.name) (\(human(v.size)), pool \(v.pool)\(domain))")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the volumes of a domain (or of all).")
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @OptionGroup var output: OutputOptions
        @Flag(help: "List the volumes of every domain, with a DOMAIN column.") var allDomains = false

        func validate() throws {
            if allDomains && domain.domain != nil { throw invalid("give --domain or --all-domains, not both") }
        }

        func run() throws {
            let request = allDomains ? ControlRequest.volumeListAllDomains : domain.wrap(.volumeList)
            let volumes = try perform(request, data.directory).volumes ?? []
            if output.json { return printJSON(volumes) }
            printTable(
                (allDomains ? ["DOMAIN"] : []) + ["NAME", "SIZE", "ALLOCATED", "POOL", "MODE", "OWNER", "OPEN"],
                volumes.map {
                    (allDomains ? [$0.domain ?? "?"] : []) + [
                        $0.name, human($0.size), human($0.allocated), $0.pool, $0.mode, "\($0.uid):\($0.gid)",
                        $0.open ? "yes" : "no",
                    ]
                })
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one volume.")
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @OptionGroup var output: OutputOptions
        @Argument var name: String

        func run() throws {
            guard let v = try perform(domain.wrap(.volumeShow(name: name)), data.directory).volumes?.first else {
                return
            }
            if output.json { return printJSON(v) }
            print(
                """
                name:       \(v.name)
                domain:     \(v.domain ?? Engine.defaultDomain)
                pool:       \(v.pool)
                size:       \(human(v.size)) (\(v.size) bytes)
                allocated:  \(human(v.allocated)) (\(v.allocated) bytes)
                referenced: \(human(v.referenced)), exclusive \(human(v.exclusive)), held by snapshots \(human(v.heldBySnapshots))
                snapshots:  \(v.snapshots)\(v.parent.map { "\nclone of:   \($0)" } ?? "")
                chunk size: \(human(v.chunkSize))
                owner:      \(v.uid):\(v.gid) mode \(v.mode)
                open:       \(v.open ? "yes" : "no")
                """)
            if let unfolded = v.unfolded, unfolded > 0 {
                print("to copy in: \(human(unfolded)) (copy-on-write of small writes; done by the next fsync)")
            }
        }
    }

    struct Resize: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change a volume's virtual size (shrinking frees chunks).",
            discussion: """
                Growing needs no flag. Shrinking drops every byte past the new end, so it needs --shrink \
                (without it: exit 2, nothing changed) and is refused while the image is open (exit 5) \
                unless --force is given too.
                """)
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @Argument var name: String
        @Option(help: "New virtual size, in whole 512-byte sectors (e.g. 80G).") var size: String
        @Flag(help: "Allow a smaller size (the data past the new end is lost).") var shrink = false
        @Flag(help: "With --shrink: shrink even while the image is open (a running guest loses that data).")
        var force = false

        func validate() throws {
            try checkName(name, "volume")
            let bytes = try parseSize(size, option: "--size")
            do { try Engine.checkSectorSize(bytes) } catch { throw invalid(error.message) }
            if force && !shrink { throw invalid("--force goes with --shrink") }
        }

        func run() throws {
            let request = ControlRequest.volumeResize(
                name: name, size: try parseSize(size, option: "--size"), shrink: shrink, force: force)
            let v = try perform(domain.wrap(request), data.directory).volumes?.first
            print("resized \(name) to \(human(v?.size ?? 0))")
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a volume and free its space.")
        @OptionGroup var data: DataOptions
        @OptionGroup var domain: DomainOptions
        @Argument var name: String
        @Flag(help: "Also delete the volume's snapshots (its image leaves group snapshots).") var withSnapshots = false

        func validate() throws { try checkName(name, "volume") }

        func run() throws {
            _ = try perform(domain.wrap(.volumeDelete(name: name, withSnapshots: withSnapshots)), data.directory)
            print("deleted \(name)")
        }
    }
}
