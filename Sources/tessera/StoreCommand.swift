import ArgumentParser
import Foundation
import TesseraCore
import TesseraEngine

struct StoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store", abstract: "Add, list, inspect, resize, remove and replace stores.",
        subcommands: [Add.self, List.self, Show.self, Set.self, Remove.self, StoreReplaceCommand.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a store to a pool (also while mounted: it takes new chunks at once).",
            discussion: """
                Exactly one of --dir, --file, --s3. S3 credentials come from AWS_ACCESS_KEY_ID and \
                AWS_SECRET_ACCESS_KEY (copied into a root-only file in the data directory) or from \
                --credentials FILE (mode 0600); they never go on the command line.
                """)
        @OptionGroup var data: DataOptions
        @Argument var name: String
        @Option(help: "The pool that gets the store.") var pool: String
        @OptionGroup var store: StoreLocationOptions

        func validate() throws {
            try checkName(name, "store")
            try checkName(pool, "pool")
            try store.check()
        }

        func run() throws {
            let (spec, written) = try store.spec(name: name, pool: pool, data: data.directory)
            let added: StoreInfo?
            do {
                added = try perform(.storeAdd(spec), data.directory).stores?.first
            } catch {
                if let written { try? FileManager.default.removeItem(atPath: written) }
                throw error
            }
            print("added store \(name) (\(spec.kind.rawValue) \(spec.location)) to pool \(pool)")
            if let share = added?.placementShare {
                print(String(format: "it will take about %.0f%% of the pool's new chunks", share * 100))
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List stores.")
        @OptionGroup var data: DataOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let stores = try perform(.storeList, data.directory).stores ?? []
            if output.json { return printJSON(stores) }
            printTable(
                ["NAME", "POOL", "KIND", "PATH", "CAPACITY", "FREE", "USED", "CHUNKS", "COMPRESS", "HEALTH"],
                stores.map {
                    [
                        $0.name, $0.pool, $0.kind, $0.path, human($0.capacity), human($0.free), human($0.used),
                        "\($0.chunks)", $0.compression, $0.health,
                    ]
                })
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one store: space, compression ratio, checksum errors.")
        @OptionGroup var data: DataOptions
        @OptionGroup var output: OutputOptions
        @Argument var name: String

        func validate() throws { try checkName(name, "store") }

        func run() throws {
            guard let s = (try perform(.storeShow(name: name), data.directory).stores ?? []).first else {
                throw failure(TesseraError(.notFound, "no store named '\(name)'"))
            }
            if output.json { return printJSON(s) }
            print(
                "store \(s.name): \(s.kind) \(s.path), pool \(s.pool)"
                    + (s.unit.map { ", placement unit #\($0)" } ?? ""))
            print(healthLine(s))
            print(
                "capacity \(human(s.capacity))" + (s.quota.map { " (quota \(human($0)))" } ?? "")
                    + ", free \(human(s.free)), chunks \(s.chunks), stored \(human(s.used))"
                    + String(format: ", takes %.0f%% of new chunks", (s.placementShare ?? 0) * 100))
            if let size = s.filesystemSize, let free = s.filesystemFree {
                print(
                    "backing filesystem: size \(human(size)), used \(human(size - min(free, size))) by all its users, free \(human(free))"
                )
            }
            var line = "compression \(s.compression)"
            if let logical = s.sampledLogical, let stored = s.sampledStored {
                line +=
                    stored > 0
                    ? String(
                        format: ", ratio %.2fx (%@ of data in %@, sampled)", Double(logical) / Double(stored),
                        human(logical), human(stored))
                    : ", ratio - (no chunks yet)"
            }
            print(line)
            print("checksum errors since mount: \(s.checksumErrors)")
        }
    }

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change a store's capacity quota (also while mounted: placement follows at once).",
            discussion: """
                --size is a dir store's quota (a placement limit on top of its filesystem's room) or an s3 \
                store's capacity; a file store's size is fixed when it is created. Exit 2 for bad input \
                (nothing changes), 3 for an unknown store.
                """)
        @OptionGroup var data: DataOptions
        @Argument var name: String
        @Option(help: "The new quota (K M G T suffixes).") var size: String

        func validate() throws {
            try checkName(name, "store")
            let bytes = try parseSize(size, option: "--size")
            if bytes == 0 { throw invalid("--size must be greater than 0") }
        }

        func run() throws {
            let s = try perform(.storeSet(name: name, size: try parseSize(size, option: "--size")), data.directory)
                .stores?.first
            print(
                "store \(name): quota \(human(s?.quota ?? 0)), capacity \(human(s?.capacity ?? 0)), free \(human(s?.free ?? 0))"
            )
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a store that holds no chunk from its pool (also while mounted).",
            discussion: """
                The store leaves placement at once; once every write in flight is flushed and it holds no \
                chunk, it leaves the catalog. Its directory, file or bucket stays, without Tessera's \
                manifests. Refused (exit 5, nothing changes) while the store holds chunks or when it is the \
                last store of a pool that holds volumes; exit 3 for an unknown store, 7 when it does not answer.
                """)
        @OptionGroup var data: DataOptions
        @Argument var name: String

        func validate() throws { try checkName(name, "store") }

        func run() throws {
            _ = try perform(.storeRemove(name: name), data.directory)
            print("store \(name) removed")
        }
    }
}

/// "health: ok since …" or "health: UNREACHABLE since … (last error: …)".
func healthLine(_ s: StoreInfo) -> String {
    let since = s.healthSince.map { " since " + timestamp($0) } ?? ""
    let error = s.lastError.map { " (last error: \($0))" } ?? ""
    let age = s.health == "ok" ? "" : s.figuresAt.map { "; figures from " + timestamp($0) } ?? "; no figures yet"
    return "health: " + (s.health == "ok" ? "ok" : "UNREACHABLE") + since + error + age
}

func timestamp(_ t: Double) -> String {
    let f = DateFormatter()
    f.dateFormat = "yyyy-MM-dd HH:mm:ss"
    return f.string(from: Date(timeIntervalSince1970: t))
}

/// Where a new store lives and how it is opened: `store add` and `store replace`.
struct StoreLocationOptions: ParsableArguments {
    @Option(help: "Directory that will hold chunk files.") var dir: String?
    @Option(help: "A file (created and preallocated with --size) or a block device.") var file: String?
    @Option(help: "An S3-compatible bucket: http[s]://HOST[:PORT]/BUCKET[/PREFIX].") var s3: String?
    @Option(
        help:
            "File store: its size; s3: its capacity quota (default 1T); dir: a quota (default: its filesystem's room)."
    )
    var size: String?
    @Option(help: "none, zstd or zstd:LEVEL (1…19); default zstd:3 for s3, none otherwise.") var compress: String?
    @Option(help: "S3 addressing: path (default) or virtual (bucket in the host name).") var addressing: String?
    @Option(help: "S3 signing region (default: $AWS_REGION, else us-east-1).") var region: String?
    @Option(help: "S3 credentials file (access_key_id = …, secret_access_key = …; mode 0600).") var credentials: String?

    func check() throws {
        let given = [dir, file, s3].compactMap { $0 }
        // Which kind of store is part of the command's shape: a usage error (64), like a missing option.
        if given.count != 1 { throw ValidationError("give exactly one of --dir, --file, --s3") }
        if given[0].isEmpty { throw invalid("the store location is empty") }
        if let size { _ = try parseSize(size, option: "--size") }
        if let compress {
            do { _ = try CompressionSetting.parse(compress) } catch { throw invalid(error.message) }
        }
        if s3 == nil && (addressing != nil || region != nil || credentials != nil) {
            throw invalid("--addressing, --region and --credentials are for --s3 stores")
        }
        if let file, size == nil, !FileManager.default.fileExists(atPath: file) {
            throw invalid("--file \(file) does not exist: give --size to create it")
        }
        if let addressing, addressing != "path" && addressing != "virtual" {
            throw invalid("--addressing must be 'path' or 'virtual'")
        }
        if let s3 { try S3Setup.checkURL(s3) }
    }

    /// The store to add, and the credentials file written for it (to remove if adding fails).
    func spec(name: String, pool: String, data: DataDirectory) throws -> (StoreSpec, String?) {
        func absolute(_ p: String) -> String {
            p.hasPrefix("/") ? p : FileManager.default.currentDirectoryPath + "/" + p
        }
        var options = StoreOptions(size: try size.map { try parseSize($0, option: "--size") }, compression: compress)
        if let dir {
            return (StoreSpec(name: name, pool: pool, kind: .dir, location: absolute(dir), options: options), nil)
        }
        if let file {
            return (StoreSpec(name: name, pool: pool, kind: .file, location: absolute(file), options: options), nil)
        }
        options.addressing = addressing
        options.region = region ?? ProcessInfo.processInfo.environment["AWS_REGION"]
        let creds = try S3Setup.credentialsFile(store: name, given: credentials.map(absolute), data: data)
        options.credentialsFile = creds.path
        return (
            StoreSpec(name: name, pool: pool, kind: .s3, location: s3!, options: options),
            creds.created ? creds.path : nil
        )
    }
}
