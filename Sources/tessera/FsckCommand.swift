import ArgumentParser
import Foundation
import TesseraControl
import TesseraCore
import TesseraEngine

struct FsckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fsck",
        abstract: "Check the catalog against the stores (every chunk present, labelled and matching its checksums).",
        discussion: """
            Runs with no mount active. Exit 0 when clean, 1 when problems remain. Each block that fails its \
            checksum is listed as "lost:" with its volume, byte range and the images that read it (the live \
            image, snapshots), followed by what to do: rewrite the range in the live image, restore from a \
            backup, or zero it. --repair removes chunks that belong to no volume and that this catalog can \
            prove it freed, at most 10% of a store's chunks (or 64) at once; --repair --force removes every \
            unreferenced chunk, without that limit. --repair --zero-unrecoverable also turns every lost block \
            into zeros on purpose (in the volume and every snapshot that reads it), reports each one as \
            "zeroed:", and leaves the images readable. --rebuild-catalog rebuilds a lost or damaged catalog \
            from the stores (store.json, manifests of volumes, snapshots and schedules, chunk labels) and \
            lists what it rebuilt and what it could not; the damaged file is kept beside it.
            """)

    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions
    @Flag(help: "Remove chunks that no volume references (those this catalog proves it freed, within the limit).")
    var repair = false
    @Flag(help: "With --repair: remove every unreferenced chunk, without proof or limit.") var force = false
    @Flag(help: "With --repair: turn blocks that fail their checksum into zeros (data there is lost for good).")
    var zeroUnrecoverable = false
    @Flag(help: "Rebuild a missing or damaged catalog from the stores.") var rebuildCatalog = false
    @Option(help: "Another store directory to rebuild from (repeatable).") var store: [String] = []

    func validate() throws {
        if repair && rebuildCatalog { throw invalid("--repair and --rebuild-catalog do not go together") }
        if !store.isEmpty && !rebuildCatalog { throw invalid("--store goes with --rebuild-catalog") }
        if zeroUnrecoverable && !repair { throw invalid("--zero-unrecoverable goes with --repair") }
        if force && !repair { throw invalid("--force goes with --repair") }
    }

    func run() throws {
        let dir = data.directory
        if (try? ControlClient.send(.status, socketPath: dir.socketPath)) != nil {
            throw failure(TesseraError(.busy, "a mount is running for \(dir.path); unmount it before fsck"))
        }
        if rebuildCatalog { return try rebuild(dir) }
        let report: FsckReport
        do {
            let engine = try Engine(dir, collectGarbage: false)
            let bar = ProgressBar(enabled: !output.json)
            report = try engine.fsck(repair: repair, force: force, zeroUnrecoverable: zeroUnrecoverable) {
                done, total in
                bar.update(done, total)
            }
            bar.finish()
        } catch {
            throw failure(error)
        }
        if output.json {
            printJSON(report)
        } else {
            for p in report.problems { print("problem: \(p)") }
            for l in report.lost where !report.zeroed.contains(l) { print("lost: \(l.description)") }
            for l in report.zeroed { print("zeroed: \(l.description)") }
            print(
                """
                volumes \(report.volumes), map entries \(report.mapEntries), chunks on stores \(report.chunksOnStores), \
                verified \(report.chunksVerified)
                missing \(report.missing), mislabeled \(report.mislabeled), corrupt chunks \(report.corruptChunks) \
                (\(report.corruptBlocks) blocks), unreferenced \(report.unreferenced), repaired \(report.repaired)
                \(report.clean ? "clean" : "NOT CLEAN")
                """)
            if report.lost.count > report.zeroed.count {
                for (i, step) in Losses.nextSteps.enumerated() {
                    print(i == 0 ? "next step: \(step)" : "           \(step)")
                }
            }
        }
        if !report.clean { throw ExitCode(1) }
    }

    private func rebuild(_ dir: DataDirectory) throws {
        let report: RebuildReport
        do { report = try CatalogRebuild.rebuild(dir, extraStores: store) } catch { throw failure(error) }
        if output.json { return printJSON(report) }
        if let aside = report.movedAside { print("damaged catalog kept as \(aside)") }
        print("rebuilt \(dir.catalogPath) from \(report.stores.joined(separator: ", "))")
        print(
            "rebuilt: pools \(report.pools), store settings \(report.storeSettings) of \(report.stores.count), "
                + "volumes \(report.volumes) (\(report.recoveredWithoutManifest) without manifest, \(report.clones) clones), "
                + "map entries \(report.mapEntries), snapshot versions \(report.retainedVersions), "
                + "snapshots \(report.snapshots.count)\(report.snapshots.isEmpty ? "" : " (" + report.snapshots.joined(separator: ", ") + ")"), "
                + "schedules \(report.schedules), domains besides the default \(report.domains)")
        print(
            "garbage: \(report.garbageChunks) chunk(s) (\(report.unlabeledChunks) unlabelled), removed at the next mount"
        )
        if report.lost.isEmpty {
            print("lost: nothing")
        } else {
            for line in report.lost { print("lost: \(line)") }
        }
    }
}

/// A one-line progress bar on stderr when it is a terminal.
final class ProgressBar {
    private let enabled: Bool
    private var last = -1
    init(enabled: Bool) { self.enabled = enabled && isatty(2) != 0 }

    func update(_ done: Int, _ total: Int) {
        guard enabled, total > 0 else { return }
        let pct = done * 100 / total
        if pct == last { return }
        last = pct
        let width = 40
        let filled = width * done / total
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        FileHandle.standardError.write("\r[\(bar)] \(pct)% (\(done)/\(total) chunks)".data(using: .utf8)!)
    }

    func finish() { if enabled && last >= 0 { FileHandle.standardError.write("\n".data(using: .utf8)!) } }
}
