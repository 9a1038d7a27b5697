import ArgumentParser
import Foundation

struct StoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store", abstract: "Add and list stores.", subcommands: [Add.self, List.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a directory store to a pool.")
        @OptionGroup var data: DataOptions
        @Argument var name: String
        @Option(help: "The pool that gets the store.") var pool: String
        @Option(help: "Directory that will hold chunk files.") var dir: String

        func validate() throws {
            try checkName(name, "store")
            try checkName(pool, "pool")
            if dir.isEmpty { throw invalid("--dir is empty") }
        }

        func run() throws {
            let path = dir.hasPrefix("/") ? dir : FileManager.default.currentDirectoryPath + "/" + dir
            _ = try perform(.storeAdd(name: name, pool: pool, dir: path), data.directory)
            print("added store \(name) (\(path)) to pool \(pool)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List stores.")
        @OptionGroup var data: DataOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let stores = try perform(.storeList, data.directory).stores ?? []
            if output.json { return printJSON(stores) }
            printTable(["NAME", "POOL", "KIND", "PATH", "CAPACITY", "FREE", "USED", "CHUNKS"],
                       stores.map { [$0.name, $0.pool, $0.kind, $0.path, human($0.capacity), human($0.free), human($0.used), "\($0.chunks)"] })
        }
    }
}
