import ArgumentParser

@main
struct Tessera: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tessera",
        abstract: "Thin virtual volumes as raw image files in a FUSE mount.",
        subcommands: [
            InitCommand.self, MountCommand.self, UnmountCommand.self, StatusCommand.self, PoolCommand.self,
            StoreCommand.self, VolumeCommand.self, FsckCommand.self,
        ])
}
