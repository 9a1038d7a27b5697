// Who may do what: the one place roles and domains are checked for API callers (Users.swift). A request
// is judged as the control socket would carry it out, so the API and the socket share one meaning of
// every action. Root on the control socket is not judged here: it stays the super-user.
//
// admin: everything. auditor: every read, nothing else. domain-admin: everything inside its domain
// (volumes, snapshots, schedules, clones, CDP, its volumes' own QoS caps), its own domain's record, no
// global settings (pools, stores, jobs, group caps, users). operator: inside its domain, creates and
// changes volumes and snapshots (grow, clone, revert, CDP marks and restores), deletes nothing, no
// settings (schedules, shrinking, CDP protection, caps). A domain-scoped caller asking about another domain is told it does
// not exist (404), so that names in other domains stay invisible; an action its role does not allow
// in its own domain is refused (403).
import TesseraCatalog
import TesseraCore
import TesseraEngine

/// The verdict on one request.
public enum AccessDecision: Equatable, Sendable {
    case allowed
    /// 403: the caller sees the object but its role does not allow the action.
    case forbidden(String)
    /// 404: the object is in a domain the caller may not see.
    case hidden(String)
}

public enum Access {
    /// Whether `user` may make `request`.
    public static func decide(_ user: UserInfo, _ request: ControlRequest) -> AccessDecision {
        let (domain, inner) = unwrap(request)
        let kind = classify(inner)
        switch user.role {
        case .admin:
            return .allowed
        case .auditor:
            return kind.readOnly ? .allowed : .forbidden("role auditor may not \(kind.verb) (it only reads)")
        case .domainAdmin, .operator:
            guard let mine = user.domain else { return .forbidden("user \(user.name) has no domain") }
            switch kind.scope {
            case .global:
                return .forbidden("role \(user.role.rawValue) acts inside domain '\(mine)' only")
            case .domainList:
                return .allowed
            case .domain(let named):
                return named == mine ? .allowed : .hidden("no domain named '\(named)'")
            case .inDomain:
                if domain != mine { return .hidden("no domain named '\(domain)'") }
                if user.role == .domainAdmin || kind.operatorMay { return .allowed }
                return .forbidden("role operator may not \(kind.verb) (deletes and settings need a domain-admin)")
            }
        }
    }

    /// What `user` may see of a reply it was allowed to ask for (a domain list shrinks to its domain).
    public static func visible(_ reply: ControlReply, to user: UserInfo) -> ControlReply {
        guard user.role.isDomainScoped, let mine = user.domain else { return reply }
        var r = reply
        r.domains = reply.domains?.filter { $0.name == mine }
        return r
    }

    private static func unwrap(_ request: ControlRequest) -> (String, ControlRequest) {
        if case .inDomain(let d, let inner) = request { return (d, inner) }
        return (Engine.defaultDomain, request)
    }

    private enum Scope {
        /// The whole mount: pools, stores, domains' settings, QoS, CDP, users, unmount.
        case global
        /// The list of domains (filtered by `visible`).
        case domainList
        /// One named domain's record.
        case domain(String)
        /// Volumes, snapshots, schedules and clones of the request's domain.
        case inDomain
    }

    private struct Kind {
        var scope: Scope
        var readOnly: Bool
        /// Whether an operator may do it (in its domain).
        var operatorMay: Bool
        /// For messages: "delete volumes".
        var verb: String
    }

    private static func classify(_ request: ControlRequest) -> Kind {
        func read(_ scope: Scope) -> Kind { Kind(scope: scope, readOnly: true, operatorMay: true, verb: "read") }
        func change(_ scope: Scope, operatorMay: Bool = false, _ verb: String) -> Kind {
            Kind(scope: scope, readOnly: false, operatorMay: operatorMay, verb: verb)
        }
        switch request {
        case .status, .poolList, .storeList, .storeShow, .volumeListAllDomains, .jobList, .jobShow:
            return read(.global)
        case .qosShow, .cdpStatus: return read(.inDomain)
        case .cdpMark: return change(.inDomain, operatorMay: true, "mark instants")
        case .cdpRestore: return change(.inDomain, operatorMay: true, "restore volumes")
        case .cdpEnable, .cdpDisable: return change(.inDomain, "change CDP protection")
        case .qosSet(let target, _), .qosClear(let target):
            // A volume's own caps are its domain's business; a pool's or everyone's group is global.
            if case .volumes = target { return change(.inDomain, "change QoS") }
            return change(.global, "change settings")
        case .userList:
            return change(.global, "list users")  // users are an admin's business, auditors included
        case .domainList: return read(.domainList)
        case .domainShow(let name): return read(.domain(name))
        case .volumeList, .volumeShow, .snapshotList, .scheduleList: return read(.inDomain)
        case .volumeCreate: return change(.inDomain, operatorMay: true, "create volumes")
        case .volumeResize(_, _, let shrink, _):
            return change(.inDomain, operatorMay: !shrink, shrink ? "shrink volumes" : "resize volumes")
        case .snapshotCreate: return change(.inDomain, operatorMay: true, "create snapshots")
        case .snapshotRevert: return change(.inDomain, operatorMay: true, "revert volumes")
        case .clone: return change(.inDomain, operatorMay: true, "clone volumes")
        case .volumeDelete: return change(.inDomain, "delete volumes")
        case .snapshotDelete: return change(.inDomain, "delete snapshots")
        case .scheduleSet, .scheduleRemove: return change(.inDomain, "change schedules")
        case .inDomain: return change(.global, "name a domain twice")
        case .poolCreate, .storeAdd, .storeSet, .storeRemove, .storeReplace, .jobCancel, .scrub, .unmount,
            .domainCreate, .domainSet, .domainDelete, .userAdd, .userRemove, .userRotateToken:
            return change(.global, "change settings")
        }
    }
}
