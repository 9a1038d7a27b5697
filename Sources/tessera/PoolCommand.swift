import ArgumentParser
import TesseraCore
import TesseraEngine

struct PoolCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool", abstract: "Create and inspect pools.",
        subcommands: [Create.self, List.self, Show.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an empty pool (add stores with 'store add').")
        @OptionGroup var data: DataOptions
        @Argument var name: String
        @Option(help: "Chunk size (power of two, 4K…64M).") var chunkSize: String = "1M"

        func validate() throws {
            try checkName(name, "pool")
            _ = try parseSize(chunkSize, option: "--chunk-size")
        }

        func run() throws {
            _ = try perform(
                .poolCreate(name: name, chunkSize: try parseSize(chunkSize, option: "--chunk-size")), data.directory)
            print("created pool \(name)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List pools.")
        @OptionGroup var data: DataOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let pools = try perform(.poolList, data.directory).pools ?? []
            if output.json { return printJSON(pools) }
            printTable(
                ["NAME", "CHUNK", "STORES", "VOLUMES", "CAPACITY", "FREE", "PROVISIONED", "ALLOCATED"],
                pools.map {
                    [
                        $0.name, human($0.chunkSize), "\($0.stores.count)", "\($0.volumes)", human($0.capacity),
                        human($0.free), human($0.provisioned), human($0.allocated),
                    ]
                })
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one pool and its stores.")
        @OptionGroup var data: DataOptions
        @OptionGroup var output: OutputOptions
        @Argument var name: String

        func run() throws {
            guard let pool = (try perform(.poolList, data.directory).pools ?? []).first(where: { $0.name == name })
            else {
                throw failure(TesseraError(.notFound, "no pool named '\(name)'"))
            }
            if output.json { return printJSON(pool) }
            print("pool \(pool.name): chunk size \(human(pool.chunkSize)), \(pool.volumes) volume(s)")
            // Tessera's own figures, then the host filesystems' (shared with everything else on them).
            let util =
                pool.capacity > 0
                ? Double(pool.capacity - min(pool.free, pool.capacity)) * 100 / Double(pool.capacity) : 0
            print(
                "tessera: capacity \(human(pool.capacity)), free \(human(pool.free)), stored \(human(pool.used)) "
                    + "(\(String(format: "%.1f", util))% of capacity in use)")
            print("volumes: provisioned \(human(pool.provisioned)), allocated \(human(pool.allocated))")
            if let size = pool.filesystemSize, let used = pool.filesystemUsed {
                print(
                    "backing filesystems: size \(human(size)), used \(human(used)) by all their users (each filesystem counted once)"
                )
            }
            // ALLOCATED: chunks placed on the store × chunk size; USED: what they really take there
            // (sparse files, compression); SHARE: of the pool's new chunks.
            printTable(
                [
                    "STORE", "KIND", "PATH", "CAPACITY", "FREE", "ALLOCATED", "USED", "CHUNKS", "SHARE", "COMPRESS",
                    "HEALTH",
                ],
                pool.stores.map { s in
                    [
                        s.name, s.kind, s.path, human(s.capacity), human(s.free),
                        human(UInt64(s.chunks) * pool.chunkSize),
                        human(s.used), "\(s.chunks)", String(format: "%.0f%%", (s.placementShare ?? 0) * 100),
                        s.compression,
                        s.health,
                    ]
                })
            for s in pool.stores where s.health != "ok" { print("store \(s.name) " + healthLine(s)) }
        }
    }
}
