// FileStore's data path (reads, writes, replace, zero, delete; slot allocation) and flush, which makes
// them durable in the order FileStore.swift's header gives.
import CLinux
import Synchronization
import SystemPackage
import TesseraCore

#if canImport(Glibc)
    import Glibc
#endif

extension FileStore {
    // MARK: Data path

    private func position(_ slot: UInt32, _ offset: Int = 0) -> Int { dataOffset + Int(slot) * chunkSize + offset }

    public func read(_ chunk: ChunkID, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        guard let slot = state.withLock({ $0.slotOf[chunk] }) else { throw .missing(chunk: chunk) }
        var done = 0
        while done < buffer.count {
            let n: Int
            do {
                n = try fd.read(
                    fromAbsoluteOffset: Int64(position(slot, offset + done)),
                    into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            } catch {
                throw StoreError.from(errno: (error as? Errno)?.rawValue ?? EIO, chunk: chunk)
            }
            // Slots lie inside the file: an end of file means it was truncated under us.
            if n == 0 { throw .io(errno: EIO, chunk: chunk) }
            done += n
        }
    }

    public func write(_ chunk: ChunkID, offset: Int, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        let slot = try slotForWrite(chunk)
        try writeAll(buffer, at: position(slot, offset), chunk)
        dataDirty.store(true, ordering: .releasing)
    }

    /// Writes into a fresh slot, then switches the chunk to it; the next flush makes the switch durable,
    /// then punches and clears the old slot (see the header). Needs one free slot: `.noSpace` otherwise.
    public func replace(_ chunk: ChunkID, with buffer: UnsafeRawBufferPointer) throws(StoreError) {
        let slot = try takeSlot(chunk)
        do {
            try writeAll(buffer, at: position(slot), chunk)
        } catch {
            release(slot, dirty: true)
            throw error
        }
        dataDirty.store(true, ordering: .releasing)
        state.withLock { s in
            if let old = s.slotOf[chunk] {
                s.kind[Int(old)] = .clearing
                s.chunkIn[Int(old)] = 0
                s.claims.remove(old)
                s.clears.append(Clear(slot: old, punch: true, dirty: true))
            }
            s.slotOf[chunk] = slot
            s.chunkIn[Int(slot)] = chunk.rawValue
            s.kind[Int(slot)] = .used
            s.claims.insert(slot)
        }
    }

    public func readAll(_ chunk: ChunkID) throws(StoreError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: chunkSize)
        try out.withMutableStoreBytes { (buffer) throws(StoreError) in try read(chunk, offset: 0, into: buffer) }
        return out
    }

    /// Slots take pieces: a 4 KiB write is one pwrite.
    public func prefersWholeChunks(_ chunk: ChunkID) -> Bool { false }

    /// Zeroes the range in place (ZERO_RANGE): the slot is the store's space whatever it holds, so it stays
    /// reserved and a later write into it cannot run out of room on the filesystem.
    public func zero(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        guard length > 0 else { return }
        guard let slot = state.withLock({ $0.slotOf[chunk] }) else { return }
        try zeroBytes(at: position(slot, offset), count: length, chunk)
        dataDirty.store(true, ordering: .releasing)
    }

    /// Punches the slot now (the chunk is gone either way once this returns); the slot is free for
    /// reuse only after a flush has made its cleared entry durable.
    /// No checksums here: a block cannot be marked unreadable (only the checksum layer above can).
    public func markUnreadable(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        throw .io(errno: EOPNOTSUPP, chunk: chunk)
    }

    public func delete(_ chunk: ChunkID) throws(StoreError) {
        guard let slot = state.withLock({ $0.slotOf[chunk] }) else { return }
        let punched = tessera_punch_hole(fd.rawValue, off_t(position(slot)), off_t(chunkSize)) == 0
        dataDirty.store(true, ordering: .releasing)
        state.withLock { s in
            s.slotOf[chunk] = nil
            s.labels[chunk] = nil
            s.chunkIn[Int(slot)] = 0
            s.kind[Int(slot)] = .clearing
            s.claims.remove(slot)
            s.clears.append(Clear(slot: slot, punch: false, dirty: !punched))
        }
    }

    /// The slot of `chunk`, allocating (and zeroing) one on its first write.
    private func slotForWrite(_ chunk: ChunkID) throws(StoreError) -> UInt32 {
        if let slot = state.withLock({ $0.slotOf[chunk] }) { return slot }
        let slot = try takeSlot(chunk)
        return state.withLock { s in
            if let existing = s.slotOf[chunk] {
                // Another writer of the same chunk won the race; ours is zeroed, so it is clean.
                s.kind[Int(slot)] = .free
                s.free.append(slot)
                return existing
            }
            s.slotOf[chunk] = slot
            s.chunkIn[Int(slot)] = chunk.rawValue
            s.kind[Int(slot)] = .used
            // The claim may reach the table before this write's data: the slot then reads as zeros,
            // which is what an unacknowledged write may leave.
            s.claims.insert(slot)
            return slot
        }
    }

    /// Takes a free slot and makes it read zeros (see the header). `.noSpace` when none is left.
    private func takeSlot(_ chunk: ChunkID) throws(StoreError) -> UInt32 {
        let (slot, dirty) = try state.withLock { s throws(StoreError) in
            guard let slot = s.free.popLast() else { throw StoreError.noSpace }
            let dirty = s.kind[Int(slot)] == .dirty
            s.kind[Int(slot)] = .allocating
            return (slot, dirty)
        }
        if !isBlockDevice || dirty {
            do {
                try zeroBytes(at: position(slot), count: chunkSize, chunk)
            } catch {
                release(slot, dirty: dirty)
                throw error
            }
            // The zeros must be durable before any claim naming the slot is: flush's first fdatasync.
            dataDirty.store(true, ordering: .releasing)
        }
        return slot
    }

    /// Puts an allocating slot back on the free list.
    private func release(_ slot: UInt32, dirty: Bool) {
        state.withLock { s in
            s.kind[Int(slot)] = dirty ? .dirty : .free
            s.free.append(slot)
        }
    }

    private func writeAll(_ buffer: UnsafeRawBufferPointer, at position: Int, _ chunk: ChunkID) throws(StoreError) {
        var done = 0
        while done < buffer.count {
            do {
                done += try fd.write(
                    toAbsoluteOffset: Int64(position + done),
                    UnsafeRawBufferPointer(rebasing: buffer[done...]))
            } catch {
                throw StoreError.from(errno: (error as? Errno)?.rawValue ?? EIO, chunk: chunk)
            }
        }
    }

    /// Makes the range read zeros, keeping it allocated: fallocate ZERO_RANGE; where the filesystem
    /// lacks it, a hole then fallocate; where a device refuses (unaligned range), written zeros.
    private func zeroBytes(at position: Int, count: Int, _ chunk: ChunkID) throws(StoreError) {
        if tessera_zero_range(fd.rawValue, off_t(position), off_t(count)) == 0 { return }
        if errno == ENOSPC || errno == EDQUOT { throw .noSpace }
        if !isBlockDevice, tessera_punch_hole(fd.rawValue, off_t(position), off_t(count)) == 0 {
            if tessera_allocate(fd.rawValue, off_t(position), off_t(count)) != 0, errno == ENOSPC || errno == EDQUOT {
                throw .noSpace
            }
            return
        }
        do throws(StoreError) {
            try Self.writeZeros(fd, at: position, count: count)
        } catch {
            if case .io(let code, _) = error { throw .io(errno: code, chunk: chunk) }
            throw error
        }
    }

    // MARK: Flush

    public func flush() throws(StoreError) {
        // Held across I/O on purpose: flush is the durability barrier (see the header).
        try flushLock.withLock { _ throws(StoreError) in try flushLocked() }
    }

    /// Flushes the whole store: the chunks share one file, whose fdatasync costs the same for a subset.
    public func flush(chunks: Set<ChunkID>) throws(StoreError) {
        try flush()
    }

    /// Steps A, B and C of the header. On failure the claims and clears not yet durable go back to
    /// be retried by the next flush.
    private func flushLocked() throws(StoreError) {
        // Claims and clears are taken together: a replace's clear is then never written before its claim.
        let (claims, taken) = state.withLock { s in
            var claims: [(UInt32, [UInt8])] = []
            for slot in s.claims.sorted() {
                let chunk = ChunkID(s.chunkIn[Int(slot)])
                guard s.kind[Int(slot)] == .used, chunk.isReal else { continue }
                claims.append(
                    (
                        slot,
                        Entry.encode(
                            chunk: chunk, sequence: s.nextSequence, label: s.labels[chunk],
                            flags: 0, slot: slot)
                    ))
                s.nextSequence += 1
            }
            s.claims = []
            let clears = s.clears
            s.clears = []
            return (claims, clears)
        }
        // Every zeroing that made a slot ready, and every delete's punch, set dataDirty before its claim
        // or clear was published; an earlier flush that took the flag synced before we got flushLock.
        let data = dataDirty.exchange(false, ordering: .acquiringAndReleasing)
        var clears = taken
        func restore(claims again: Bool) {
            dataDirty.store(true, ordering: .releasing)
            state.withLock { s in
                if again {
                    for (slot, _) in claims where s.kind[Int(slot)] == .used { s.claims.insert(slot) }
                }
                s.clears += clears
            }
        }
        if data {
            do throws(StoreError) {
                try sync()  // A
            } catch {
                restore(claims: true)
                throw error
            }
        }
        if !claims.isEmpty {
            do throws(StoreError) {
                try writeEntries(claims)
                try sync()  // B
            } catch {
                restore(claims: true)
                throw error
            }
        }
        guard !clears.isEmpty else { return }
        for i in clears.indices where clears[i].punch {
            if tessera_punch_hole(fd.rawValue, off_t(position(clears[i].slot)), off_t(chunkSize)) != 0 {
                clears[i].dirty = true
            }
        }
        do throws(StoreError) {
            try writeEntries(
                clears.map {
                    (
                        $0.slot,
                        Entry.encode(
                            chunk: .none, sequence: 0, label: nil,
                            flags: Self.entryStale, slot: $0.slot)
                    )
                })
            try sync()  // C
        } catch {
            restore(claims: false)
            throw error
        }
        state.withLock { s in
            for c in clears {
                s.kind[Int(c.slot)] = c.dirty ? .dirty : .free
                s.free.append(c.slot)
            }
        }
    }

    private func sync() throws(StoreError) {
        if fdatasync(fd.rawValue) != 0 { throw StoreError.from(errno: errno, chunk: .none) }
    }

    /// Writes table entries, one pwrite per run of consecutive slots.
    private func writeEntries(_ entries: [(UInt32, [UInt8])]) throws(StoreError) {
        let sorted = entries.sorted { $0.0 < $1.0 }
        var i = 0
        while i < sorted.count {
            var run = sorted[i].1
            var j = i + 1
            while j < sorted.count, sorted[j].0 == sorted[j - 1].0 + 1 {
                run += sorted[j].1
                j += 1
            }
            let at = Self.headerBytes + Int(sorted[i].0) * Self.entryBytes
            try run.withStoreBytes { (p) throws(StoreError) in try writeAll(p, at: at, .none) }
            i = j
        }
    }
}
