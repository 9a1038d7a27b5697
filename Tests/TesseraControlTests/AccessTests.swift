// The role × action × domain matrix of Access.decide: every role against requests in its own domain,
// another domain and the whole mount (API routes reach exactly these requests).
import Foundation
import TesseraCatalog
import TesseraControl
import TesseraCore
import TesseraEngine
import Testing

@Suite("Access")
struct AccessTests {
    static let admin = UserInfo(name: "a", role: .admin, domain: nil, createdAt: 0)
    static let auditor = UserInfo(name: "u", role: .auditor, domain: nil, createdAt: 0)
    static let domainAdmin = UserInfo(name: "d", role: .domainAdmin, domain: "red", createdAt: 0)
    static let op = UserInfo(name: "o", role: .operator, domain: "red", createdAt: 0)

    /// What each role gets: A allowed, F forbidden (403), H hidden (404).
    static let matrix:
        [(String, ControlRequest, admin: Character, auditor: Character, domainAdmin: Character, op: Character)] = [
            ("status", .status, "A", "A", "F", "F"),
            ("volume list, own domain", .inDomain(domain: "red", request: .volumeList), "A", "A", "A", "A"),
            ("volume list, other domain", .inDomain(domain: "blue", request: .volumeList), "A", "A", "H", "H"),
            ("volume list, default domain", .volumeList, "A", "A", "H", "H"),
            ("volume show, own", .inDomain(domain: "red", request: .volumeShow(name: "v")), "A", "A", "A", "A"),
            ("volume show, other", .inDomain(domain: "blue", request: .volumeShow(name: "v")), "A", "A", "H", "H"),
            (
                "volume create, own",
                .inDomain(domain: "red", request: .volumeCreate(name: "v", size: 1, pool: nil, count: nil)),
                "A", "F", "A", "A"
            ),
            (
                "volume create, other",
                .inDomain(domain: "blue", request: .volumeCreate(name: "v", size: 1, pool: nil, count: nil)), "A", "F",
                "H", "H"
            ),
            (
                "volume grow, own",
                .inDomain(domain: "red", request: .volumeResize(name: "v", size: 2, shrink: false, force: false)),
                "A", "F", "A", "A"
            ),
            (
                "volume shrink, own",
                .inDomain(domain: "red", request: .volumeResize(name: "v", size: 1, shrink: true, force: false)),
                "A", "F", "A", "F"
            ),
            (
                "volume delete, own", .inDomain(domain: "red", request: .volumeDelete(name: "v", withSnapshots: false)),
                "A", "F", "A", "F"
            ),
            (
                "volume delete, other",
                .inDomain(domain: "blue", request: .volumeDelete(name: "v", withSnapshots: false)),
                "A", "F", "H", "H"
            ),
            ("snapshot list, own", .inDomain(domain: "red", request: .snapshotList), "A", "A", "A", "A"),
            (
                "snapshot create, own",
                .inDomain(domain: "red", request: .snapshotCreate(name: "s", volumes: ["v"], all: false)),
                "A", "F", "A", "A"
            ),
            ("snapshot delete, own", .inDomain(domain: "red", request: .snapshotDelete(name: "s")), "A", "F", "A", "F"),
            (
                "snapshot delete, other", .inDomain(domain: "blue", request: .snapshotDelete(name: "s")), "A", "F", "H",
                "H"
            ),
            ("clone, own", .inDomain(domain: "red", request: .clone(source: "v", name: "w")), "A", "F", "A", "A"),
            (
                "schedule set, own", .inDomain(domain: "red", request: .scheduleSet(target: "v", every: 60, keep: 2)),
                "A", "F", "A", "F"
            ),
            ("domain list", .domainList, "A", "A", "A", "A"),
            ("domain show, own", .domainShow(name: "red"), "A", "A", "A", "A"),
            ("domain show, other", .domainShow(name: "blue"), "A", "A", "H", "H"),
            ("domain create", .domainCreate(name: "x", settings: DomainSettings()), "A", "F", "F", "F"),
            ("domain set, own", .domainSet(name: "red", settings: DomainSettings(quotaVolumes: 9)), "A", "F", "F", "F"),
            ("pool create", .poolCreate(name: "p", chunkSize: 4096), "A", "F", "F", "F"),
            ("pool list", .poolList, "A", "A", "F", "F"),
            ("all domains' volumes", .volumeListAllDomains, "A", "A", "F", "F"),
            ("user list", .userList, "A", "F", "F", "F"),
            ("user add", .userAdd(name: "n", role: "operator", domain: "red"), "A", "F", "F", "F"),
            ("user remove", .userRemove(name: "n"), "A", "F", "F", "F"),
            ("qos show", .qosShow(volume: nil), "A", "A", "H", "H"),
            ("qos show, own", .inDomain(domain: "red", request: .qosShow(volume: nil)), "A", "A", "A", "A"),
            (
                "qos set, own volume",
                .inDomain(domain: "red", request: .qosSet(target: .volumes(["v"]), limits: QoSLimits(iops: 5))),
                "A", "F", "A", "F"
            ),
            ("qos set, all", .qosSet(target: .all, limits: QoSLimits(iops: 5)), "A", "F", "F", "F"),
            (
                "cdp enable, own", .inDomain(domain: "red", request: .cdpEnable(volume: "v", window: 60, maxSize: nil)),
                "A", "F", "A", "F"
            ),
            ("cdp mark, own", .inDomain(domain: "red", request: .cdpMark(volume: "v", name: "m")), "A", "F", "A", "A"),
            (
                "cdp mark, other", .inDomain(domain: "blue", request: .cdpMark(volume: "v", name: "m")), "A", "F", "H",
                "H"
            ),
            ("job list", .jobList, "A", "A", "F", "F"),
            ("job cancel", .jobCancel(id: 1), "A", "F", "F", "F"),
            ("unmount", .unmount(force: false), "A", "F", "F", "F"),
        ]

    static func letter(_ d: AccessDecision) -> Character {
        switch d {
        case .allowed: "A"
        case .forbidden: "F"
        case .hidden: "H"
        }
    }

    @Test(arguments: matrix.indices)
    func decides(_ i: Int) {
        let row = Self.matrix[i]
        let got = [Self.admin, Self.auditor, Self.domainAdmin, Self.op].map { Self.letter(Access.decide($0, row.1)) }
        #expect(String(got) == String([row.admin, row.auditor, row.domainAdmin, row.op]), "\(row.0)")
    }

    @Test func messagesSayWhy() {
        let delete = ControlRequest.inDomain(domain: "red", request: .volumeDelete(name: "v", withSnapshots: false))
        guard case .forbidden(let why) = Access.decide(Self.op, delete) else {
            Issue.record("an operator deleted a volume")
            return
        }
        #expect(why.contains("operator may not delete volumes"))
        #expect(
            Access.decide(Self.op, .inDomain(domain: "blue", request: .volumeList)) == .hidden("no domain named 'blue'")
        )
    }

    @Test func aDomainListShowsADomainUserOnlyItsDomain() throws {
        func domain(_ name: String) throws -> DomainInfo {
            let json =
                #"{"id": 1, "name": "\#(name)", "createdAt": 0, "volumes": 0, "provisioned": 0, "allocated": 0, "#
                + #""snapshots": 0, "schedules": 0}"#
            return try JSONDecoder().decode(DomainInfo.self, from: Data(json.utf8))
        }
        let reply = ControlReply(domains: [try domain("default"), try domain("red"), try domain("blue")])
        #expect(Access.visible(reply, to: Self.op).domains?.map(\.name) == ["red"])
        #expect(Access.visible(reply, to: Self.auditor).domains?.count == 3)
    }
}
