import ArgumentParser
import Foundation
import TesseraCore
import TesseraEngine

struct JobCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job", abstract: "List, inspect and cancel jobs (store replace).",
        subcommands: [List.self, Show.self, Cancel.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List jobs, oldest first.")
        @OptionGroup var data: DataOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let jobs = try perform(.jobList, data.directory).jobs ?? []
            if output.json { return printJSON(jobs) }
            printTable(
                ["ID", "KIND", "STATE", "PROGRESS", "SUBJECT", "ERROR"],
                jobs.map { ["\($0.id)", $0.kind, $0.state, progressCell($0), $0.subject, $0.lastError ?? "-"] })
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one job: state, progress, rate, last error.",
            discussion: "Exit 3 for an unknown job.")
        @OptionGroup var data: DataOptions
        @OptionGroup var output: OutputOptions
        @Argument var id: Int64
        @Flag(help: "Show progress until the job ends.") var wait = false

        func run() throws {
            if wait { return try waitForJob(id, data.directory) }
            guard let j = try perform(.jobShow(id: id), data.directory).jobs?.first else { return }
            if output.json { return printJSON(j) }
            print("job #\(j.id): \(j.kind) \(j.subject), \(j.state)")
            print("progress: " + progressLine(j))
            if let rate = j.rate { print("rate cap: \(human(UInt64(rate)))/s") }
            if let e = j.lastError { print("last error: \(e)" + (j.errorAt.map { " at " + timestamp($0) } ?? "")) }
            print("created \(timestamp(j.createdAt)), updated \(timestamp(j.updatedAt))")
        }
    }

    struct Cancel: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cancel a running or paused job and undo it.",
            discussion: """
                A store replace is undone: the old store stays (it holds every chunk and every write), the \
                new one leaves the catalog and its copied chunks are removed. Exit 3 for an unknown job, 2 \
                for a job that has already ended; nothing changes then.
                """)
        @OptionGroup var data: DataOptions
        @Argument var id: Int64

        func run() throws {
            _ = try perform(.jobCancel(id: id), data.directory)
            print("job #\(id) cancelled")
        }
    }
}

func progressCell(_ j: JobInfo) -> String {
    j.totalChunks > 0 ? "\(j.doneChunks * 100 / j.totalChunks)%" : (j.state == "done" ? "100%" : "-")
}

/// "12.0M of 64.0M (96 of 512 chunks), 5.2M/s, ETA 10 s".
func progressLine(_ j: JobInfo) -> String {
    var line =
        "\(human(UInt64(j.doneBytes))) of \(human(UInt64(max(j.totalBytes, j.doneBytes)))) "
        + "(\(j.doneChunks) of \(j.totalChunks) chunks)"
    if let speed = j.speed, speed > 0, !j.isFinished {
        line += ", \(human(UInt64(speed)))/s"
        let left = Double(max(j.totalChunks - j.doneChunks, 0)) * Double(j.doneBytes) / Double(max(j.doneChunks, 1))
        line += ", ETA \(Int((left / speed).rounded(.up))) s"
    }
    return line
}

/// Prints the job's progress about once a second until it ends; a job that ends other than done
/// fails the command (exit 5 cancelled, 7 failed), and so does an unfinished job without a mount to
/// work it (exit 5).
func waitForJob(_ id: Int64, _ data: DataDirectory) throws {
    var last = ""
    while true {
        guard let j = try perform(.jobShow(id: id), data).jobs?.first else { return }
        var line = "job #\(id) \(j.state): " + progressLine(j)
        if j.state == "paused", let e = j.lastError { line += " (\(e))" }
        if line != last { print(line) }
        last = line
        if !j.isFinished, !(try perform(.status, data).status?.mounted ?? false) {
            throw failure(
                TesseraError(.busy, "job #\(id) is \(j.state) and nothing is mounted: it goes on at the next mount"))
        }
        switch j.state {
        case "done": return
        case "cancelled": throw failure(TesseraError(.busy, "job #\(id) was cancelled"))
        case "failed": throw failure(TesseraError(.io, "job #\(id) failed: \(j.lastError ?? "?")"))
        default: Thread.sleep(forTimeInterval: 1)
        }
    }
}
