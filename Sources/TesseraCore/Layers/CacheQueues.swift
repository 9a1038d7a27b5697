// CacheQueues — the cache's eviction policy, S3-FIFO, over the slot records of CacheState.
//
// Queues of clean blocks: `small` (probationary, 10 % of the slots) and `main`, plus `ghost`, a ring of
// hashes of keys recently evicted from `small`. A new block enters `small` (or `main` when its key is in
// the ghost); a hit raises a 2-bit frequency. Eviction takes `small`'s tail while `small` holds ≥ 10 % of
// the slots — into `main` if it was hit since it came in, else out (its key into the ghost) — otherwise
// `main`'s tail, which goes round again with frequency − 1 while its frequency is > 0. Data read once
// never reaches `main`, so a scan cannot push out the working set.
// Invariants: a queue is a doubly linked list through the slot records (`prev`, `next`); a slot is on at
// most one queue (`queue`), and a dirty block is on none (pinned: never evicted). Everything here runs
// under the cache's state lock.

extension CacheLayer {
    enum Queue: UInt8 { case none = 0, small = 1, main = 2 }

    /// A doubly linked FIFO through the slot records: newest at `head`, oldest at `tail`.
    struct List {
        var head: Int32 = -1
        var tail: Int32 = -1
        var count = 0
    }
}

extension CacheLayer.State {
    mutating func push(_ i: Int, _ q: CacheLayer.Queue) {
        let l = Int(q.rawValue)
        slots[i].queue = q
        slots[i].prev = -1
        slots[i].next = lists[l].head
        if lists[l].head >= 0 { slots[Int(lists[l].head)].prev = Int32(i) } else { lists[l].tail = Int32(i) }
        lists[l].head = Int32(i)
        lists[l].count += 1
    }

    mutating func unlink(_ i: Int) {
        guard slots[i].queue != .none else { return }
        let l = Int(slots[i].queue.rawValue)
        let (p, n) = (slots[i].prev, slots[i].next)
        if p >= 0 { slots[Int(p)].next = n } else { lists[l].head = n }
        if n >= 0 { slots[Int(n)].prev = p } else { lists[l].tail = p }
        lists[l].count -= 1
        slots[i].queue = .none
        slots[i].prev = -1
        slots[i].next = -1
    }

    /// A hit: frequency up, read-ahead hit counted once.
    mutating func touch(_ i: Int) {
        if slots[i].freq < 3 { slots[i].freq += 1 }
        if slots[i].prefetched {
            slots[i].prefetched = false
            stats.readAheadHits += 1
        }
    }

    /// Queues a clean block: `main` when it was hit or its key is in the ghost, else `small`.
    mutating func queueClean(_ i: Int) {
        push(i, slots[i].freq > 0 || ghost[Self.ghostHash(slots[i].key)] != nil ? .main : .small)
    }

    /// S3-FIFO eviction of one clean block (see the header); nil when every block is dirty.
    mutating func evict() -> Int? {
        while true {
            let small = lists[Int(CacheLayer.Queue.small.rawValue)]
            let main = lists[Int(CacheLayer.Queue.main.rawValue)]
            let fromSmall = small.count > 0 && (small.count >= smallTarget || main.count == 0)
            guard fromSmall || main.count > 0 else { return nil }
            let i = Int(fromSmall ? small.tail : main.tail)
            unlink(i)
            if slots[i].freq > 0 {
                slots[i].freq -= 1
                push(i, .main)
                continue
            }
            if fromSmall { remember(slots[i].key) }
            forget(i)
            stats.evictions += 1
            return i
        }
    }

    static func ghostHash(_ k: CacheLayer.Key) -> UInt64 {
        var z = k.chunk ^ (UInt64(k.block) &* 0x9E37_79B9_7F4A_7C15)
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Records a key evicted from `small`, overwriting the oldest record once the ring is full.
    mutating func remember(_ k: CacheLayer.Key) {
        let h = Self.ghostHash(k)
        if ghostRing.count < ghostCapacity {
            ghost[h] = Int32(ghostRing.count)
            ghostRing.append(h)
            return
        }
        let old = ghostRing[ghostNext]
        if ghost[old] == Int32(ghostNext) { ghost[old] = nil }
        ghostRing[ghostNext] = h
        ghost[h] = Int32(ghostNext)
        ghostNext = (ghostNext + 1) % ghostCapacity
    }
}
