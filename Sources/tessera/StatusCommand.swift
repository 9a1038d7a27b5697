import ArgumentParser

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the mount and totals.")
    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        guard let s = try perform(.status, data.directory).status else { return }
        if output.json { return printJSON(s) }
        print("data directory: \(s.dataDirectory)")
        print("mount:          \(s.mountpoint.map { "\($0) (pid \(s.pid))" } ?? "not mounted")")
        print("pools: \(s.pools)  stores: \(s.stores)  volumes: \(s.volumes)  open images: \(s.openImages)")
        print("provisioned: \(human(s.provisioned))  allocated: \(human(s.allocated))")
    }
}
