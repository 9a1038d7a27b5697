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
            _ = try perform(.poolCreate(name: name, chunkSize: try parseSize(chunkSize, option: "--chunk-size")), data.directory)
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
                    [$0.name, human($0.chunkSize), "\($0.stores.count)", "\($0.volumes)", human($0.capacity),
                     human($0.free), human($0.provisioned), human($0.allocated)]
                })
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one pool and its stores.")
        @OptionGroup var data: DataOptions
        @OptionGroup var output: OutputOptions
        @Argument var name: String

        func run() throws {
            guard let pool = (try perform(.poolList, data.directory).pools ?? []).first(where: { $0.name == name }) else {
                throw failure(TesseraError(.notFound, "no pool named '\(name)'"))
            }
            if output.json { return printJSON(pool) }
            print("pool \(pool.name): chunk size \(human(pool.chunkSize)), \(pool.volumes) volume(s)")
            let util = pool.capacity > 0 ? Double(pool.capacity - pool.free) * 100 / Double(pool.capacity) : 0
            print("capacity \(human(pool.capacity)), free \(human(pool.free)), utilisation \(String(format: "%.1f", util))%")
            print("provisioned \(human(pool.provisioned)), allocated \(human(pool.allocated)), used on stores \(human(pool.used))")
            // ALLOCATED: chunks placed on the store × chunk size; USED: what they really take there
            // (sparse files, compression); UTIL: used share of the store's capacity.
            printTable(["STORE", "KIND", "PATH", "CAPACITY", "FREE", "ALLOCATED", "USED", "UTIL", "CHUNKS", "COMPRESS"],
                       pool.stores.map { s in
                           let util = s.capacity > 0 ? Double(s.capacity - min(s.free, s.capacity)) * 100 / Double(s.capacity) : 0
                           return [s.name, s.kind, s.path, human(s.capacity), human(s.free), human(UInt64(s.chunks) * pool.chunkSize),
                                   human(s.used), String(format: "%.1f%%", util), "\(s.chunks)", s.compression]
                       })
        }
    }
}
