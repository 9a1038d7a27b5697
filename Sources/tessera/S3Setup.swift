// S3Setup — what the executable adds for `s3` stores: URL checks and credentials for `store add`, and
// the opener the engine calls to open an s3 store (registered at start, so the engine and its tests do
// not link the HTTP stack).
import Foundation
import TesseraCore
import TesseraEngine
import TesseraS3
import TesseraStores

enum S3Setup {
    /// Capacity an s3 store may fill when `--size` is not given.
    static let defaultCapacity: UInt64 = 1 << 40

    static func checkURL(_ url: String) throws {
        do { _ = try S3Endpoint(url: url) } catch { throw invalid(error.description) }
    }

    /// The credentials file for a new store: `given` (checked: root-only, readable, complete), or the
    /// environment's credentials written to DATA/credentials/NAME (mode 0600; `created` is then true).
    static func credentialsFile(store: String, given: String?, data: DataDirectory) throws -> (
        path: String, created: Bool
    ) {
        if let given {
            do { _ = try S3Credentials.load(from: given) } catch { throw invalid(error.description) }
            return (given, false)
        }
        let creds: S3Credentials
        do { creds = try S3Credentials.fromEnvironment() } catch {
            throw invalid(
                "\(error.description); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give --credentials FILE")
        }
        let dir = data.path + "/credentials"
        let path = dir + "/" + store
        if FileManager.default.fileExists(atPath: path) {
            throw failure(TesseraError(.exists, "\(path) exists already (a store named '\(store)'?)"))
        }
        do {
            try FileManager.default.createDirectory(
                atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try creds.write(to: path)
        } catch {
            throw failure(TesseraError(.io, "cannot write the credentials file \(path): \(error)"))
        }
        return (path, true)
    }

    /// Lets the engine open `s3` stores.
    static func register() {
        StoreKinds.register(.s3) { location, options, chunkSize, _ in
            let style: S3Endpoint.AddressingStyle = options.addressing == "virtual" ? .virtualHost : .path
            let endpoint = try S3Endpoint(url: location, style: style, region: options.region)
            guard let file = options.credentialsFile else {
                throw StoreSetupError("no credentials file recorded for \(endpoint)")
            }
            let credentials = try S3Credentials.load(from: file)
            return try S3Store(
                endpoint: endpoint, credentials: credentials, chunkSize: chunkSize,
                capacity: options.size ?? defaultCapacity)
        }
    }
}
