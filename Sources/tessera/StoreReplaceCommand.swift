import ArgumentParser
import Foundation
import TesseraCore
import TesseraEngine

/// `tessera store replace NAME (--dir | --file | --s3) … [--rate SIZE/s] [--wait]`.
struct StoreReplaceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replace",
        abstract: "Put a new store in a store's place and copy every chunk into it (a job; also while mounted).",
        discussion: """
            The new store (exactly one of --dir, --file, --s3, with the options of 'store add') joins the old \
            store's placement unit; a job copies every chunk into it while the images stay in use (writes go \
            to both stores meanwhile), then the new store takes the old one's name and the old one leaves the \
            catalog (its files stay, without Tessera's manifests). No chunk ID or map changes. While mounted \
            the mount's job runner does the copy (it resumes after kill -9 or unmount at the next mount); \
            otherwise this command does it before it returns. 'tessera job list|show|cancel' follow it. \
            Exit 3 for an unknown store, 4 when the location is in use or not empty, 5 when the store is \
            already being replaced, 2 for bad input; nothing changes then.
            """)
    @OptionGroup var data: DataOptions
    @Argument(help: "The store to replace.") var name: String
    @OptionGroup var store: StoreLocationOptions
    @Option(help: "Copy at most this many bytes a second (K M G T suffixes, e.g. 50M/s); default: no cap.")
    var rate: String?
    @Flag(help: "Show progress until the job ends.") var wait = false

    func validate() throws {
        try checkName(name, "store")
        try store.check()
        if let rate { _ = try parseRate(rate) }
    }

    func run() throws {
        // The new store goes by a temporary name until the job is done, then takes NAME.
        let (spec, written) = try store.spec(name: name + "-new", pool: "", data: data.directory)
        let job: JobInfo
        do {
            guard
                let j = try perform(
                    .storeReplace(name: name, spec: spec, rate: try rate.map(parseRate)), data.directory
                ).jobs?.first
            else { throw failure(TesseraError(.io, "the mount did not answer with the job")) }
            job = j
        } catch {
            if let written { try? FileManager.default.removeItem(atPath: written) }
            throw error
        }
        print("job #\(job.id): replacing store \(name) with \(spec.kind.rawValue) \(spec.location)")
        if wait || job.isFinished { try waitForJob(job.id, data.directory) }
    }
}

/// `SIZE/s` (or SIZE) as bytes per second, at least 1.
func parseRate(_ text: String) throws -> UInt64 {
    let size = text.hasSuffix("/s") ? String(text.dropLast(2)) : text
    let bytes = try parseSize(size, option: "--rate")
    if bytes == 0 { throw invalid("--rate must be greater than 0") }
    return bytes
}
