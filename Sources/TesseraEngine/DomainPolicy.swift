// Domain policy — what a domain may hold and where its volumes go.
//
// Quotas: volumes (count), size (the sum of its volumes' virtual sizes) and snapshots (count). Every
// change that adds to one of them checks here first and, over the quota, throws `.quota` (EDQUOT for a
// file gesture) before it changes anything. Volume creation checks under the engine's state lock, so
// concurrent creators cannot both pass; growth by resize, write or fallocate checks just before it
// grows (two growths racing can pass together by at most one write each).
// Placement: a domain's `pools` policy names the pools its volumes may use; a volume created without a
// pool goes to the allowed pool with the most free room, and a pool outside the policy is refused.
import TesseraCatalog
import TesseraCore

extension Engine {
    // MARK: Quotas

    /// Refuses (`.quota`) adding `volumes` volumes, `size` bytes of virtual size or `snapshots`
    /// snapshots to domain `id`, given what `s` holds. Call with the state locked.
    static func checkQuota(_ id: Int64, in s: State, volumes: Int = 0, size: UInt64 = 0, snapshots: Int = 0)
        throws(TesseraError)
    {
        guard let d = s.domains[id] else { throw TesseraError(.notFound, "no domain #\(id)") }
        let mine = s.byName.filter { $0.key.domain == id }.values
        if volumes > 0, let q = d.quotaVolumes, mine.count + volumes > q {
            throw TesseraError(
                .quota,
                "domain '\(d.name)' is over its quota of \(q) volumes (it holds \(mine.count); this adds \(volumes))")
        }
        if size > 0, let q = d.quotaSize {
            let have = mine.reduce(UInt64(0)) { $0 + (s.volumes[$1]?.size ?? 0) }
            if have + size > UInt64(q) {
                throw TesseraError(
                    .quota,
                    "domain '\(d.name)' is over its size quota of \(ByteSize.format(UInt64(q))) "
                        + "(its volumes provision \(ByteSize.format(have)); this adds \(ByteSize.format(size)))")
            }
        }
        if snapshots > 0, let q = d.quotaSnapshots {
            let have = s.snapshots.values.filter { $0.domainId == id && !isHidden($0.name) }.count
            if have + snapshots > q {
                throw TesseraError(
                    .quota, "domain '\(d.name)' is over its quota of \(q) snapshots (it holds \(have))")
            }
        }
    }

    /// Refuses (`.quota`) growing `v` to `newSize` past its domain's size quota; shrinking always passes.
    /// Every path that grows a volume calls it first: resize, and in the mount truncate, a write or
    /// fallocate past the end, copy_file_range.
    public func checkGrowth(_ v: Volume, to newSize: UInt64) throws(TesseraError) {
        let old = v.size
        guard newSize > old else { return }
        let domain = v.record.domainId
        try state.withLock { s throws(TesseraError) in
            guard s.domains[domain]?.quotaSize != nil else { return }
            try Self.checkQuota(domain, in: s, size: newSize - old)
        }
    }

    // MARK: Placement

    /// The pool a new volume of domain `domainID` goes to: `requested` (which must exist and be allowed),
    /// else the allowed pool (with a store) with the most free room, else "default".
    func placementPool(_ requested: String?, domainID: Int64) throws(TesseraError) -> Pool {
        let d = state.withLock { $0.domains[domainID] }
        guard let allowed = d?.pools, let d else { return try pool(named: requested ?? "default") }
        if let requested {
            let p = try pool(named: requested)
            guard allowed.contains(requested) else {
                throw TesseraError(
                    .invalid,
                    "pool '\(requested)' is not one domain '\(d.name)' may use (\(allowed.joined(separator: ", ")))")
            }
            return p
        }
        var best: PoolInfo?
        for p in try poolInfos() where allowed.contains(p.name) && !p.stores.isEmpty {
            if best == nil || p.free > best!.free { best = p }
        }
        guard let best else {
            throw TesseraError(
                .invalid,
                "none of the pools domain '\(d.name)' may use (\(allowed.joined(separator: ", "))) has a store")
        }
        return try pool(named: best.name)
    }
}
