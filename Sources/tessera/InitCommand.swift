import ArgumentParser
import TesseraCore
import TesseraEngine

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create the catalog and pool 'default' on a directory store in the data directory.")

    @OptionGroup var data: DataOptions
    @Option(help: "Chunk size of the default pool (power of two, 4K…64M).") var chunkSize: String?

    func validate() throws {
        if let chunkSize { _ = try parseSize(chunkSize, option: "--chunk-size") }
    }

    func run() throws {
        let dir = data.directory
        let size = try chunkSize.map { try parseSize($0, option: "--chunk-size") } ?? Engine.defaultChunkSize
        guard size >= 4096, size <= 64 << 20, size & (size - 1) == 0 else {
            throw invalid("--chunk-size must be a power of two from 4K to 64M")
        }
        do {
            try Engine.initialize(dir, chunkSize: size)
        } catch {
            throw failure(error)
        }
        print("initialised \(dir.path): pool 'default' (chunk size \(human(size))) on \(dir.defaultStorePath)")
    }
}
