// Store replace as a job (Jobs.swift, ReplaceLayer.swift): every chunk is copied with reads and writes
// correct during and after; no chunk ID changes; an interrupted job resumes after reopening; cancel
// leaves the old store in place; bad input changes nothing; a catalog of the previous release
// (v9-cdp) gets the job table.

import Foundation
import GRDB
import TesseraCore
import TesseraTestSupport
import Testing

@testable import TesseraCatalog
@testable import TesseraEngine

@Suite struct ReplaceTests {
    /// A new directory for a store.
    static func directory(_ t: TestData, _ name: String) throws -> String {
        let dir = t.dir.path + "/" + name
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static func spec(_ location: String) -> StoreSpec {
        StoreSpec(name: "d1-new", pool: "", kind: .dir, location: location)
    }

    /// The chunks the maps name (live and retained).
    static func mapped(_ e: Engine) -> Set<ChunkID> {
        Set(e.allVolumes().flatMap { v in (v.mapEntries + v.retainedEntries).map(\.1).filter(\.isReal) })
    }

    /// Regular files under root/chunks.
    static func chunkFiles(_ root: String) throws -> Int {
        let all = FileManager.default.enumerator(atPath: root + "/chunks")?.allObjects as? [String] ?? []
        return all.filter { p in
            var isDir: ObjCBool = false
            return FileManager.default.fileExists(atPath: root + "/chunks/" + p, isDirectory: &isDir)
                && !isDir.boolValue
        }.count
    }

    @Test func replaceCopiesEveryChunkWhileReadsAndWritesGoOn() throws {
        let t = try TestData()
        let cs = Int(t.chunkSize)
        var expected = try UnitEngineTests.populate(t)
        let target = try Self.directory(t, "d1b")
        try t.withEngine { (e) throws in
            let before = Self.mapped(e)
            let unitChunks = before.filter { $0.unit == UnitID(2) }.count
            #expect(unitChunks > 2, "the fixture puts chunks on d1")
            let job = try e.replaceStore("d1", with: Self.spec(target), rate: nil)
            #expect(job.state == "running")
            #expect(try e.storeInfos().map(\.name).sorted() == ["d1", "d1-new", "d2", "default"])
            try e.runJobs(budget: 2)
            #expect(try e.job(job.id).doneChunks == 2)
            #expect(try UnitEngineTests.contents(e) == expected, "reads mid-job")
            // Writes mid-job: over copied and uncopied chunks, and into new chunks.
            let a = try #require(e.volume(named: "a"))
            let data = [UInt8].pattern(6 * cs, seed: 9)
            try a.write(data, at: UInt64(cs / 2))
            expected[0].replaceSubrange(cs / 2..<(cs / 2 + 6 * cs), with: data)
            try e.flushAll()
            #expect(try UnitEngineTests.contents(e) == expected, "reads after writes mid-job")
            try e.runJobs()
            let done = try e.job(job.id)
            #expect(done.state == "done" && done.doneChunks == done.totalChunks)
            #expect(try UnitEngineTests.contents(e) == expected, "reads after the job")
            // The new store took the old one's name and unit; the old one left.
            let d1 = try #require(try e.storeInfos().first { $0.name == "d1" })
            #expect(d1.path == target && d1.unit == 2)
            #expect(try e.storeInfos().count == 3)
            #expect(try e.catalog.unitMembers().filter { $0.unitId == 2 }.map(\.role) == [.primary])
            #expect(Manifests.readStore(root: target)?.storeName == "d1")
            #expect(Manifests.readStore(root: t.dir.path + "/d1") == nil)
        }
        try t.withEngine { (e) throws in
            #expect(try UnitEngineTests.contents(e) == expected, "after reopening")
            #expect(try e.fsck(repair: false).clean)
        }
    }

    @Test func chunkIDsAndMapsStayAsTheyWere() throws {
        let t = try TestData()
        let expected = try UnitEngineTests.populate(t)
        let target = try Self.directory(t, "d1b")
        try t.withEngine { (e) throws in
            let maps = e.allVolumes().map { $0.mapEntries.map { "\($0.0)=\($0.1.rawValue)" } }
            let onUnit = try #require(e.poolLayers().compactMap { $0.store(UnitID(2)) }.first).allChunks()
            _ = try e.replaceStore("d1", with: Self.spec(target), rate: nil)
            try e.runJobs()
            #expect(e.allVolumes().map { $0.mapEntries.map { "\($0.0)=\($0.1.rawValue)" } } == maps)
            let now = try #require(e.poolLayers().compactMap { $0.store(UnitID(2)) }.first).allChunks()
            #expect(Set(now) == Set(onUnit))
            #expect(try UnitEngineTests.contents(e) == expected)
        }
    }

    @Test func anInterruptedJobResumesAfterReopening() throws {
        let t = try TestData()
        let cs = Int(t.chunkSize)
        var expected = try UnitEngineTests.populate(t)
        let target = try Self.directory(t, "d1b")
        let id = try t.withEngine { (e) throws -> Int64 in
            let job = try e.replaceStore("d1", with: Self.spec(target), rate: nil)
            try e.runJobs(budget: 1)
            let a = try #require(e.volume(named: "a"))
            let data = [UInt8].pattern(3 * cs, seed: 11)
            try a.write(data, at: 0)
            expected[0].replaceSubrange(0..<(3 * cs), with: data)
            try e.flushAll()
            return job.id
        }
        try t.withEngine { (e) throws in
            let job = try e.job(id)
            #expect(job.state == "running" && job.doneChunks == 1)
            #expect(try UnitEngineTests.contents(e) == expected, "reads after reopening mid-job")
            try e.runJobs(budget: 1)
        }
        try t.withEngine { (e) throws in
            #expect(try e.job(id).doneChunks == 2)
            try e.runJobs()
            #expect(try e.job(id).state == "done")
            #expect(try UnitEngineTests.contents(e) == expected)
            #expect(try e.fsck(repair: false).clean)
        }
    }

    @Test func cancelLeavesTheOldStoreInPlace() throws {
        let t = try TestData()
        let cs = Int(t.chunkSize)
        var expected = try UnitEngineTests.populate(t)
        let target = try Self.directory(t, "d1b")
        let old = t.dir.path + "/d1"
        try t.withEngine { (e) throws in
            let job = try e.replaceStore("d1", with: Self.spec(target), rate: nil)
            try e.runJobs(budget: 2)
            let a = try #require(e.volume(named: "a"))
            let data = [UInt8].pattern(8 * cs, seed: 13)
            try a.write(data, at: 0)
            expected[0] = data
            try e.flushAll()
            let cancelled = try e.cancelJob(job.id)
            #expect(cancelled.state == "cancelled")
            #expect(try UnitEngineTests.contents(e) == expected)
            #expect(try e.storeInfos().first { $0.name == "d1" }?.path == old)
            #expect(try e.storeInfos().count == 3)
            #expect(try e.catalog.unitMembers().filter { $0.unitId == 2 }.map(\.role) == [.primary])
            #expect(Manifests.readStore(root: target) == nil)
            #expect(try Self.chunkFiles(target) == 0, "the copied chunks are removed")
            expectCode(.invalid) { _ = try e.cancelJob(job.id) }
            expectCode(.notFound) { _ = try e.cancelJob(99) }
            // The same directory can serve a later replace, which completes.
            _ = try e.replaceStore("d1", with: Self.spec(target), rate: nil)
            try e.runJobs()
            #expect(try UnitEngineTests.contents(e) == expected)
        }
        try t.withEngine { (e) throws in
            #expect(try UnitEngineTests.contents(e) == expected)
            #expect(try e.jobs().map(\.state) == ["cancelled", "done"])
        }
    }

    @Test func aFailingStorePausesTheJobUntilItAnswers() throws {
        let t = try TestData()
        let expected = try UnitEngineTests.populate(t)
        let target = try Self.directory(t, "d1b")
        try t.withEngine { (e) throws in
            let job = try e.replaceStore("d1", with: Self.spec(target), rate: nil)
            try e.runJobs(budget: 1)
            // The target's chunk directory turns into a file: every copy into it fails.
            try FileManager.default.moveItem(atPath: target + "/chunks", toPath: target + "/chunks.aside")
            FileManager.default.createFile(atPath: target + "/chunks", contents: Data())
            try e.runJobs()
            let paused = try e.job(job.id)
            #expect(paused.state == "paused" && paused.lastError != nil && paused.errorAt != nil, "\(paused)")
            #expect(try UnitEngineTests.contents(e) == expected, "reads while paused")
            try FileManager.default.removeItem(atPath: target + "/chunks")
            try FileManager.default.moveItem(atPath: target + "/chunks.aside", toPath: target + "/chunks")
            try e.runJobs()
            #expect(try e.job(job.id).state == "done")
            #expect(try UnitEngineTests.contents(e) == expected)
        }
    }

    @Test func badInputChangesNothing() throws {
        let t = try TestData()
        _ = try UnitEngineTests.populate(t)
        let target = try Self.directory(t, "d1b")
        try t.withEngine { (e) throws in
            expectCode(.notFound) { _ = try e.replaceStore("nope", with: Self.spec(target), rate: nil) }
            expectCode(.exists, "onto another store's directory") {
                _ = try e.replaceStore("d1", with: Self.spec(t.dir.path + "/d2"), rate: nil)
            }
            expectCode(.notFound, "a directory that does not exist") {
                _ = try e.replaceStore("d1", with: Self.spec(t.dir.path + "/missing"), rate: nil)
            }
            expectCode(.invalid) { _ = try e.replaceStore("d1", with: Self.spec(target), rate: 0) }
            #expect(try e.jobs().isEmpty)
            #expect(try e.storeInfos().count == 3)
            let job = try e.replaceStore("d1", with: Self.spec(target), rate: nil)
            let other = try Self.directory(t, "d1c")
            var second = Self.spec(other)
            second.name = "d1-other"
            expectCode(.busy, "a second job on the store") { _ = try e.replaceStore("d1", with: second, rate: nil) }
            expectCode(.busy, "the replacement itself") { _ = try e.replaceStore("d1-new", with: second, rate: nil) }
            expectCode(.busy, "remove during the job") { try e.removeStore("d1") }
            #expect(try e.jobs().count == 1)
            try e.runJobs()
            #expect(try e.job(job.id).state == "done")
        }
    }

    @Test func aCatalogOfThePreviousReleaseGetsTheJobTable() throws {
        let t = try TestData()
        let expected = try UnitEngineTests.populate(t)
        try t.rewriteCatalog(asOf: "v9-cdp")
        let q = try DatabaseQueue(path: t.data.catalogPath)
        #expect(try q.read { db in try db.tableExists("job") } == false, "the fixture is of the previous schema")
        try q.close()
        let target = try Self.directory(t, "d1b")
        try t.withEngine { (e) throws in
            #expect(try e.jobs().isEmpty)
            #expect(try UnitEngineTests.contents(e) == expected)
            _ = try e.replaceStore("d1", with: Self.spec(target), rate: 1 << 30)
            try e.runJobs()
            #expect(try e.jobs().map(\.state) == ["done"])
            #expect(try UnitEngineTests.contents(e) == expected)
        }
    }
}
