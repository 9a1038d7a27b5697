import ArgumentParser
import Foundation
import TesseraCore
import TesseraEngine

struct ScrubCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scrub",
        abstract: "Verify every chunk on every store (or one) against its checksums.",
        discussion: """
            Works while mounted (volumes stay in use) and without a mount. Shows a progress bar on a \
            terminal, then a summary and one line per bad chunk (store, chunk, volume and offset), with one \
            "lost:" line per bad block (volume, byte range, whether the live image and which snapshots \
            read it) and what to do next: rewrite the range, restore from a backup, or (unmounted) \
            'tessera fsck --repair --zero-unrecoverable'. \
            Exit 0 when every chunk verified, 7 when a chunk is corrupt or unreadable.
            """)
    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions
    @Option(help: "Scrub only this store.") var store: String?

    func validate() throws { if let store { try checkName(store, "store") } }

    func run() throws {
        let bar = ProgressBar(enabled: !output.json)
        let reply = try perform(.scrub(store: store), data.directory) { done, total in bar.update(done, total) }
        bar.finish()
        guard let r = reply.scrub else { throw failure(TesseraError(.io, "the mount sent no scrub report")) }
        if output.json {
            printJSON(r)
        } else {
            for f in r.findings {
                var where_ = ""
                if let v = f.volume, let off = f.volumeOffset { where_ = " (volume \(v), bytes from \(off))" }
                let at =
                    f.offsets.isEmpty ? "" : " at chunk offset(s) \(f.offsets.map(String.init).joined(separator: ","))"
                print(
                    "\(f.problem): store \(f.store) chunk \(f.chunk)\(at)\(where_)\(f.detail.map { ": " + $0 } ?? "")")
                for l in f.lost { print("  lost: \(l.description)") }
            }
            print(
                String(
                    format: "scrubbed %d chunk(s) (%@) on %d store(s) in %.1f s: %d ok, %d corrupt, %d unreadable",
                    r.chunks, human(r.bytes), r.stores, r.seconds, r.ok + r.unchecked, r.corrupt, r.unreadable))
            if r.findings.contains(where: { !$0.lost.isEmpty }) {
                for (i, step) in Losses.nextSteps.enumerated() {
                    print(i == 0 ? "next step: \(step)" : "           \(step)")
                }
            }
        }
        if !r.findings.isEmpty {
            throw failure(TesseraError(.io, "scrub found \(r.corrupt) corrupt and \(r.unreadable) unreadable chunk(s)"))
        }
    }
}
