// Domains — namespaces of volumes, snapshots and schedules (names are unique per domain; see the
// catalog's `domain` table). The engine names everything in the default domain so far: its name
// index and its lookups by name see only that domain, while rows of other domains are loaded and kept
// (their chunks stay referenced). What the engine does with domains beyond that is still to come.
import Foundation
import TesseraCatalog
import TesseraCore

extension Engine {
    /// Writes the domains' manifest on the stores at `roots`, for a rebuild to find them.
    func recordDomains(roots: [String]) throws(TesseraError) {
        let m = DomainsManifest(writtenAt: Date().timeIntervalSince1970, domains: try catalog.domains())
        try Manifests.writeShared(m, file: Manifests.domainsFile, roots: roots)
    }
}
