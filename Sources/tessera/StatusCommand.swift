import ArgumentParser
import TesseraFUSE

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the mount and totals.")
    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        guard var s = try perform(.status, data.directory).status else { return }
        if !s.mounted { s.deadMount = MountPoint.deadMount(of: data.directory) }
        if output.json { return printJSON(s) }
        print("data directory: \(s.dataDirectory)")
        if let dead = s.deadMount {
            print(
                "mount:          dead mount at \(dead) (the daemon died); 'tessera mount \(dead)' clears it and mounts again"
            )
        } else {
            print("mount:          \(s.mountpoint.map { "\($0) (pid \(s.pid))" } ?? "not mounted")")
        }
        if let api = s.api { print("HTTP API:       http://\(api)/v1") }
        print("pools: \(s.pools)  stores: \(s.stores)  volumes: \(s.volumes)  open images: \(s.openImages)")
        for name in s.openImageNames { print("  open: \(name)") }
        print("provisioned: \(human(s.provisioned))  allocated: \(human(s.allocated))")
        print("checksum errors since mount: \(s.checksumErrors)")
        for h in s.storeHealth {
            let error = h.lastError.map { " (last error: \($0))" } ?? ""
            print(
                "store \(h.name) (pool \(h.pool)): " + (h.health == "ok" ? "ok" : "UNREACHABLE")
                    + " since \(timestamp(h.since))"
                    + (h.health == "ok" ? "" : error))
        }
        for j in s.jobs ?? [] {
            print("job #\(j.id) \(j.kind) \(j.subject), \(j.state): " + progressLine(j))
        }
        for q in s.qos ?? [] {
            let under = ([q.settings?.summary].compactMap { $0 } + q.groups.map { "group \($0)" })
            print(
                String(
                    format: "qos %@: %@; %.0f IOPS, %@/s; throttled %.1fs", q.volume,
                    under.joined(separator: ", "), q.stats.opsPerSecond, human(UInt64(q.stats.bytesPerSecond)),
                    q.stats.throttledSeconds))
        }
        if s.mounted && s.caches.isEmpty { print("RAM cache: off (mount --cache-size SIZE)") }
        for c in s.caches {
            let st = c.stats
            let readAhead = st.readAheadBlocks == 0 ? 0 : Double(st.readAheadHits) * 100 / Double(st.readAheadBlocks)
            print(
                String(
                    format:
                        "cache %@: %@ of %@ used, %@ dirty; hit rate %.1f%% (%llu hits, %llu misses); read-ahead %.1f%% used; %llu write-backs (%llu errors), %llu evictions",
                    c.pool, human(UInt64(st.cachedBytes)), human(UInt64(st.capacityBytes)),
                    human(UInt64(st.dirtyBytes)),
                    st.hitRate * 100, st.hits, st.misses, readAhead, st.writeBacks, st.writeBackErrors, st.evictions))
        }
    }
}
