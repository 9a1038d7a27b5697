// QoS through the engine: a setting reaches the volume's layer at once and survives reopening; it follows
// a rename, goes with a deleted volume, and a clone starts without one; a change naming several volumes is
// all or none; group settings (pool, all) apply to every volume they cover, new ones included.
import Foundation
import TesseraCore
import Testing

@testable import TesseraEngine

@Suite("QoSEngine")
struct QoSEngineTests {
    /// Whether `name`'s layer makes a burst of 4K reads wait (it does only under a cap).
    static func throttled(_ engine: Engine, _ name: String) throws -> Bool {
        let volume = try #require(engine.volume(named: name))
        let layer = try #require(engine.throttle(of: volume))
        return (0..<1000).contains { _ in layer.admit(write: false, bytes: 4096) > 0 }
    }

    static func own(_ engine: Engine, _ name: String) throws -> QoSLimits? {
        try engine.qosReport(volume: name).volumes.first?.settings
    }

    @Test func aSettingAppliesAtOnceFollowsRenamesAndSurvivesReopening() throws {
        let t = try TestData()
        try t.withEngine { e in
            try e.createVolumes(name: "vm", size: 1 << 20)
            #expect(try !Self.throttled(e, "vm"))
            try e.setQoS(.volumes(["vm"]), QoSLimits(iops: 100))
            #expect(try Self.throttled(e, "vm"))
            try e.setQoS(.volumes(["vm"]), QoSLimits(burst: 2))  // joins the cap already set
            try e.renameVolume("vm", to: "db")
            _ = try e.clone("db", as: "copy")
        }
        try t.withEngine { e in
            #expect(try Self.own(e, "db") == QoSLimits(iops: 100, burst: 2))
            #expect(try Self.throttled(e, "db"))
            #expect(try Self.own(e, "copy") == nil)
            #expect(try !Self.throttled(e, "copy"))
            try e.clearQoS(.volumes(["db"]))
            #expect(try !Self.throttled(e, "db"))
            #expect(try Self.own(e, "db") == nil)
        }
    }

    @Test func aChangeOfSeveralVolumesIsAllOrNone() throws {
        let t = try TestData()
        try t.withEngine { e in
            try e.createVolumes(name: "a", size: 1 << 20)
            try e.createVolumes(name: "b", size: 1 << 20)
            try e.setQoS(.volumes(["b"]), QoSLimits(iops: 50))
            // A floor that fits a's settings (none) but not b's cap: nothing changes for either.
            expectCode(.invalid) { try e.setQoS(.volumes(["a", "b"]), QoSLimits(minIops: 60)) }
            expectCode(.notFound) { try e.setQoS(.volumes(["a", "nosuch"]), QoSLimits(iops: 5)) }
            expectCode(.invalid) { try e.setQoS(.volumes(["a"]), QoSLimits()) }
            expectCode(.invalid) { try e.setQoS(.volumes(["a"]), QoSLimits(burst: 1)) }  // a has no cap
            expectCode(.notFound) { try e.setQoS(.pool("nosuch"), QoSLimits(iops: 5)) }
            expectCode(.invalid) { try e.setQoS(.all, QoSLimits(iops: 5, weight: 3)) }
            #expect(try Self.own(e, "a") == nil)
            #expect(try Self.own(e, "b") == QoSLimits(iops: 50))
        }
    }

    @Test func groupSettingsCoverEveryVolumeOfTheGroupNewOnesToo() throws {
        let t = try TestData()
        try t.withEngine { e in
            try e.createPool(name: "other", chunkSize: 64 * 1024)
            try FileManager.default.createDirectory(atPath: t.dir.path + "/o", withIntermediateDirectories: true)
            try e.addStore(
                StoreSpec(name: "o", pool: "other", kind: .dir, location: t.dir.path + "/o", options: StoreOptions()))
            try e.createVolumes(name: "here", size: 1 << 20)
            try e.createVolumes(name: "there", size: 1 << 20, pool: "other")
            try e.setQoS(.pool("default"), QoSLimits(iops: 100))
            #expect(try Self.throttled(e, "here"))
            #expect(try !Self.throttled(e, "there"))
            try e.createVolumes(name: "later", size: 1 << 20)
            #expect(try Self.throttled(e, "later"))
            let report = try e.qosReport()
            #expect(report.groups.map(\.group) == ["pool default"])
            #expect(report.volumes.first { $0.volume == "later" }?.groups == ["pool default"])
            try e.clearQoS(.pool("default"))
            try e.setQoS(.all, QoSLimits(bps: 1 << 20))
            #expect(try Self.throttled(e, "there"))
        }
    }
}
