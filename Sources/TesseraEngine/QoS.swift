// QoS — the engine's side of quality of service: the settings in force (from the catalog), the throttle
// groups they make, and the QoS layer on top of each live volume's stack (built in Stacks.swift).
//
// A volume is held to every setting that applies to it: its own, its pool's (one group shared by all
// the pool's volumes, as a qemu throttle group is) and the one for every volume; a request waits for
// the slowest. Settings are keyed by volume id: they follow a rename and go with a deleted volume; a
// clone starts without one (it is a new volume: give it its own with `qos set`).
// Changes commit to the catalog first, then replace the groups of what they touch, so a running
// mount applies them to the next request (buckets start full: a new or changed cap begins with its
// burst allowance).
// State: one Mutex, taken by the control plane and when a stack is built; never on the data path.
import Foundation
import Synchronization
import TesseraCatalog
import TesseraCore

/// What `qos set` and `qos clear` act on.
public enum QoSTarget: Codable, Sendable, Equatable {
    case volumes([String])
    case pool(String)
    case all
}

/// One volume's QoS for `qos show` and `status`.
public struct QoSVolumeInfo: Codable, Sendable, Equatable {
    public var volume: String
    /// The volume's domain (nil: the default one).
    public var domain: String?
    public var pool: String
    /// The volume's own settings (nil: none).
    public var settings: QoSLimits?
    /// The groups it belongs to as well: "pool NAME", "all".
    public var groups: [String]
    public var stats: QoSStats
}

/// A group setting for `qos show`: "pool NAME" or "all".
public struct QoSGroupInfo: Codable, Sendable, Equatable {
    public var group: String
    public var settings: QoSLimits
}

public struct QoSReport: Codable, Sendable, Equatable {
    public var groups: [QoSGroupInfo]
    public var volumes: [QoSVolumeInfo]
}

final class QoSRegistry: Sendable {
    private struct State {
        var settings: [QoSRecord.Scope: QoSLimits] = [:]
        var groups: [QoSRecord.Scope: ThrottleGroup] = [:]
        var layers: [VolumeID: (layer: QoSLayer, pool: Int64)] = [:]
    }
    private let state = Mutex(State())

    /// Takes the settings the catalog holds (at open, before any stack is built).
    func load(_ records: [QoSRecord]) {
        state.withLock { s in
            for r in records {
                guard let target = r.target else { continue }
                s.settings[target] = r.limits
                if r.limits.hasCaps { s.groups[target] = ThrottleGroup(r.limits) }
            }
        }
    }

    /// The QoS layer over `below` for volume `id` of pool `pool`, with the groups in force.
    func layer(for id: VolumeID, pool: Int64, over below: any VolumeStore) -> QoSLayer {
        let layer = QoSLayer(over: below)
        state.withLock { s in
            s.layers[id] = (layer, pool)
            layer.apply(Self.groups(id, pool, s))
        }
        return layer
    }

    func layer(of id: VolumeID) -> QoSLayer? { state.withLock { $0.layers[id]?.layer } }

    func forget(_ id: VolumeID) { state.withLock { _ = $0.layers.removeValue(forKey: id) } }

    func settings(_ target: QoSRecord.Scope) -> QoSLimits? { state.withLock { $0.settings[target] } }

    /// Puts committed settings in force (empty limits: none) and re-applies every layer.
    func replace(_ changes: [(QoSRecord.Scope, QoSLimits)]) {
        state.withLock { s in
            for (target, limits) in changes {
                s.settings[target] = limits.isEmpty ? nil : limits
                s.groups[target] = limits.hasCaps ? ThrottleGroup(limits) : nil
            }
            for (id, entry) in s.layers { entry.layer.apply(Self.groups(id, entry.pool, s)) }
        }
    }

    /// Every group setting and the layers, for reports.
    func snapshot() -> (settings: [QoSRecord.Scope: QoSLimits], layers: [VolumeID: QoSLayer]) {
        state.withLock { s in (s.settings, s.layers.mapValues { $0.layer }) }
    }

    private static func groups(_ id: VolumeID, _ pool: Int64, _ s: State) -> [ThrottleGroup] {
        [s.groups[.volume(id)], s.groups[.pool(pool)], s.groups[.all]].compactMap { $0 }
    }
}

extension Engine {
    /// The QoS layer on top of `v`'s stack: the FUSE adapter admits requests through it (nil once the
    /// volume is gone).
    public func throttle(of v: Volume) -> QoSLayer? { qos.layer(of: v.id) }

    /// `qos set`: changes the settings `limits` names for each target (volumes of `domain`) — the others
    /// stay —, all or none.
    public func setQoS(_ target: QoSTarget, _ limits: QoSLimits, domain: String = DomainRecord.defaultName)
        throws(TesseraError)
    {
        if limits.isEmpty { throw TesseraError(.invalid, "give at least one setting (see 'tessera qos set --help')") }
        let scopes = try resolve(target, domainID: try domainID(domain))
        var changes: [(QoSRecord.Scope, QoSLimits)] = []
        for (scope, name) in scopes {
            let merged = (qos.settings(scope) ?? QoSLimits()).updated(with: limits)
            if let problem = merged.problem(group: !isVolume(scope)) {
                throw TesseraError(.invalid, scopes.count > 1 ? "\(name): \(problem)" : problem)
            }
            changes.append((scope, merged))
        }
        try catalog.setQoS(changes)
        qos.replace(changes)
    }

    /// `qos clear`: removes every setting of each target.
    public func clearQoS(_ target: QoSTarget, domain: String = DomainRecord.defaultName) throws(TesseraError) {
        let changes = try resolve(target, domainID: try domainID(domain)).map { ($0.scope, QoSLimits()) }
        try catalog.setQoS(changes)
        qos.replace(changes)
    }

    /// `qos show`: the group settings and every volume of `domain` (nil: of every domain; or just `name`,
    /// of `domain` or the default one) with its settings and figures.
    public func qosReport(volume name: String? = nil, domain: String? = nil) throws(TesseraError) -> QoSReport {
        var only: Volume?
        let domainID = try domain.map { name throws(TesseraError) in try self.domainID(name) }
        if let name { only = try requireVolume(name, domainID: domainID ?? DomainRecord.defaultID) }
        let (settings, layers) = qos.snapshot()
        let pools = state.withLock { s in s.pools.mapValues(\.record.name) }
        var groups: [QoSGroupInfo] = []
        for (id, poolName) in pools.sorted(by: { $0.key < $1.key }) {
            if let l = settings[.pool(id)] { groups.append(QoSGroupInfo(group: "pool \(poolName)", settings: l)) }
        }
        if let l = settings[.all] { groups.append(QoSGroupInfo(group: "all", settings: l)) }
        let chosen = only.map { [$0] } ?? allVolumes().filter { domainID == nil || $0.record.domainId == domainID }
        let volumes = chosen.map { v in
            let poolId = v.record.poolId
            var member: [String] = []
            if settings[.pool(poolId)] != nil { member.append("pool \(v.poolName)") }
            if settings[.all] != nil { member.append("all") }
            let domain = v.record.domainId == DomainRecord.defaultID ? nil : domainName(id: v.record.domainId)
            return QoSVolumeInfo(
                volume: v.name, domain: domain, pool: v.poolName, settings: settings[.volume(v.id)], groups: member,
                stats: layers[v.id]?.stats ?? QoSStats())
        }
        return QoSReport(groups: groups, volumes: volumes)
    }

    /// The scopes a target names, each with the name to report it by.
    private func resolve(_ target: QoSTarget, domainID: Int64) throws(TesseraError)
        -> [(scope: QoSRecord.Scope, name: String)]
    {
        switch target {
        case .volumes(let names):
            if names.isEmpty { throw TesseraError(.invalid, "name a volume, or give --pool POOL or --all") }
            var seen = Set<String>()
            var scopes: [(scope: QoSRecord.Scope, name: String)] = []
            for n in names where seen.insert(n).inserted {
                scopes.append((QoSRecord.Scope.volume(try requireVolume(n, domainID: domainID).id), n))
            }
            return scopes
        case .pool(let name): return [(QoSRecord.Scope.pool(try pool(named: name).record.id!), "pool \(name)")]
        case .all: return [(QoSRecord.Scope.all, "all")]
        }
    }

    private func isVolume(_ scope: QoSRecord.Scope) -> Bool {
        if case .volume = scope { return true }
        return false
    }
}
