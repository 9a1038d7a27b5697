import Dispatch
import Foundation
import Hummingbird
import NIOCore
import TesseraControl
import TesseraCore
import TesseraEngine

/// The /v1 routes. Each one reads its input into a ControlRequest (`Call`); `serve` does the rest the
/// same way for all: token, role and domain (Access), the ControlService, the reply or a JSON error.
struct Routes: Sendable {
    let service: ControlService
    /// Larger bodies are refused (413) before they are parsed.
    static let maxBody = 64 * 1024

    func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: JSONErrors())
        router.get("/v1/openapi.json") { _, _ in jsonResponse(.ok, raw: OpenAPIDocument.json) }
        route(router, .get, "/v1/status") { _ in Call(.status) { $0.status } }

        route(router, .get, "/v1/volumes") { i in Call(i.inDomain(.volumeList)) { Listing(volumes: $0.volumes) } }
        route(router, .post, "/v1/volumes", created: true) { i in
            let b = try i.body(VolumeCreateBody.self)
            return Call(i.inDomain(.volumeCreate(name: b.name, size: b.size.bytes, pool: b.pool, count: nil), b.domain))
            { $0.volumes?.first }
        }
        route(router, .get, "/v1/volumes/:name") { i in
            Call(i.inDomain(.volumeShow(name: try i.path("name")))) { $0.volumes?.first }
        }
        route(router, .post, "/v1/volumes/:name/resize") { i in
            let b = try i.body(ResizeBody.self)
            let name = try i.path("name")
            let request = ControlRequest.volumeResize(
                name: name, size: b.size.bytes, shrink: b.shrink ?? false, force: false)
            return Call(i.inDomain(request, b.domain)) { $0.volumes?.first }
        }
        route(router, .delete, "/v1/volumes/:name") { i in
            let withSnapshots = i.query("withSnapshots") == "true"
            return Call(i.inDomain(.volumeDelete(name: try i.path("name"), withSnapshots: withSnapshots)), nil)
        }

        route(router, .get, "/v1/snapshots") { i in
            Call(i.inDomain(.snapshotList)) { Listing(snapshots: $0.snapshots) }
        }
        route(router, .post, "/v1/snapshots", created: true) { i in
            let b = try i.body(SnapshotCreateBody.self)
            let request = ControlRequest.snapshotCreate(name: b.name, volumes: b.volumes ?? [], all: b.all ?? false)
            return Call(i.inDomain(request, b.domain)) { $0.snapshots?.first }
        }
        route(router, .delete, "/v1/snapshots/:name") { i in
            Call(i.inDomain(.snapshotDelete(name: try i.path("name"))), nil)
        }

        route(router, .get, "/v1/domains") { _ in Call(.domainList) { Listing(domains: $0.domains) } }
        route(router, .get, "/v1/domains/:name") { i in
            Call(.domainShow(name: try i.path("name"))) { $0.domains?.first }
        }

        route(router, .get, "/v1/users") { _ in Call(.userList) { Listing(users: $0.users) } }
        route(router, .post, "/v1/users", created: true) { i in
            let b = try i.body(UserCreateBody.self)
            return Call(.userAdd(name: b.name, role: b.role, domain: b.domain)) { r in
                r.users?.first.map { NewToken(user: $0, token: r.token ?? "") }
            }
        }
        route(router, .delete, "/v1/users/:name") { i in Call(.userRemove(name: try i.path("name")), nil) }
        return router
    }

    /// Registers `path`: answers 200 (201 when `created`) with what the call renders, 204 when it
    /// renders nothing.
    private func route(
        _ router: Router<BasicRequestContext>, _ method: HTTPRequest.Method, _ path: RouterPath,
        created: Bool = false, _ make: @escaping @Sendable (Input) throws -> Call
    ) {
        router.on(path, method: method) { request, context -> Response in
            var request = request
            let body: ByteBuffer
            do {
                body = try await request.collectBody(upTo: Self.maxBody)
            } catch {
                return errorResponse(.contentTooLarge, "too_large", "the body is larger than \(Self.maxBody) bytes")
            }
            let uri = request.uri
            let parameters = context.parameters
            let input = Input(
                bearer: bearer(request.headers[.authorization]), body: Data(buffer: body),
                query: { uri.queryParameters.get($0) }, path: { parameters.get($0) })
            return await withCheckedContinuation { done in
                DispatchQueue.global().async { done.resume(returning: serve(input, created: created, make)) }
            }
        }
    }

    /// Runs on a Dispatch worker: everything here may block.
    private func serve(_ input: Input, created: Bool, _ make: (Input) throws -> Call) -> Response {
        guard let token = input.bearer, let user = service.engine.authenticate(token: token) else {
            var r = errorResponse(.unauthorized, "unauthorized", "a valid 'Authorization: Bearer TOKEN' is required")
            r.headers[.wwwAuthenticate] = "Bearer"
            return r
        }
        var input = input
        input.user = user
        let call: Call
        do {
            call = try make(input)
        } catch {
            return errorResponse(error as? TesseraError ?? TesseraError(.invalid, "\(error)"))
        }
        switch Access.decide(user, call.request) {
        case .allowed: break
        case .forbidden(let why): return errorResponse(.forbidden, "forbidden", why)
        case .hidden(let why): return errorResponse(.notFound, "not_found", why)
        }
        let reply = service.handle(call.request)
        if let error = reply.error { return errorResponse(error) }
        guard let render = call.render else { return Response(status: .noContent) }
        guard let value = render(Access.visible(reply, to: user)) else {
            return errorResponse(.internalServerError, "internal", "the reply is missing its result")
        }
        return jsonResponse(created ? .created : .ok, value)
    }
}

/// What a route asks for and how its reply is shown (nil `render`: 204, no body).
struct Call {
    var request: ControlRequest
    var render: ((ControlReply) -> (any Encodable)?)?
    init(_ request: ControlRequest, _ render: ((ControlReply) -> (any Encodable)?)?) {
        self.request = request
        self.render = render
    }
}

/// One request's input, as a route reads it.
struct Input: Sendable {
    var bearer: String?
    var body: Data
    var queryValue: @Sendable (String) -> String?
    var pathValue: @Sendable (String) -> String?
    /// The caller (set once the token is checked, before the route reads its input).
    var user: UserInfo? = nil

    init(
        bearer: String?, body: Data, query: @escaping @Sendable (String) -> String?,
        path: @escaping @Sendable (String) -> String?
    ) {
        self.bearer = bearer
        self.body = body
        self.queryValue = query
        self.pathValue = path
    }

    func query(_ name: String) -> String? { queryValue(name) }

    func path(_ name: String) throws(TesseraError) -> String {
        guard let v = pathValue(name) else { throw TesseraError(.invalid, "the path names no \(name)") }
        return v
    }

    /// `request` in the domain given (in the body, else `?domain=`), else the caller's own domain, else
    /// the default domain.
    func inDomain(_ request: ControlRequest, _ given: String? = nil) -> ControlRequest {
        let domain = given ?? query("domain") ?? user?.domain ?? Engine.defaultDomain
        return domain == Engine.defaultDomain ? request : .inDomain(domain: domain, request: request)
    }

    func body<T: Decodable>(_ type: T.Type) throws(TesseraError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: body)
        } catch let DecodingError.keyNotFound(key, _) {
            throw TesseraError(.invalid, "the JSON body lacks '\(key.stringValue)'")
        } catch let DecodingError.typeMismatch(_, c), let DecodingError.valueNotFound(_, c) {
            throw TesseraError(.invalid, "the JSON body has a wrong type at '\(pathText(c))'")
        } catch let DecodingError.dataCorrupted(c) where !c.codingPath.isEmpty {
            throw TesseraError(.invalid, "'\(pathText(c))': \(c.debugDescription)")
        } catch {
            throw TesseraError(.invalid, "the body is not a JSON object of the expected shape")
        }
    }

    private func pathText(_ c: DecodingError.Context) -> String {
        c.codingPath.map(\.stringValue).joined(separator: ".")
    }
}

/// A size as bytes (a number) or with a suffix ("40G", powers of 1024), as the CLI takes it.
struct SizeValue: Decodable {
    var bytes: UInt64
    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(UInt64.self) {
            bytes = n
            return
        }
        do {
            bytes = try ByteSize.parse(try c.decode(String.self))
        } catch {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a size (bytes, or e.g. \"40G\")")
        }
    }
}

struct VolumeCreateBody: Decodable {
    var name: String
    var size: SizeValue
    var pool: String?
    var domain: String?
}

struct ResizeBody: Decodable {
    var size: SizeValue
    var shrink: Bool?
    var domain: String?
}

struct SnapshotCreateBody: Decodable {
    var name: String
    var volumes: [String]?
    var all: Bool?
    var domain: String?
}

struct UserCreateBody: Decodable {
    var name: String
    var role: String
    var domain: String?
}

/// `{"volumes": [...]}` and the like: a listing under its noun.
struct Listing: Encodable {
    var volumes: [VolumeInfo]? = nil
    var snapshots: [SnapshotInfo]? = nil
    var domains: [DomainInfo]? = nil
    var users: [UserInfo]? = nil
}

struct NewToken: Encodable {
    var user: UserInfo
    var token: String
}

/// Turns any error a route throws (an unknown path among them) into the JSON error shape.
struct JSONErrors: RouterMiddleware {
    typealias Context = BasicRequestContext
    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as HTTPError {
            let code =
                e.status == .notFound ? "not_found" : e.status == .methodNotAllowed ? "method_not_allowed" : "http"
            return errorResponse(
                e.status, code, e.status == .notFound ? "no such path: \(request.uri.path)" : e.status.reasonPhrase)
        } catch {
            return errorResponse(.internalServerError, "internal", "\(error)")
        }
    }
}

private func bearer(_ header: String?) -> String? {
    guard let header, header.lowercased().hasPrefix("bearer ") else { return nil }
    return String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
}

/// The HTTP status and code word of an engine error.
func errorResponse(_ error: TesseraError) -> Response {
    let (status, code): (HTTPResponse.Status, String) =
        switch error.code {
        case .invalid: (.badRequest, "invalid")
        case .notFound: (.notFound, "not_found")
        case .exists: (.conflict, "exists")
        case .busy: (.conflict, "busy")
        case .quota: (.conflict, "quota_exceeded")
        case .noSpace: (.init(code: 507, reasonPhrase: "Insufficient Storage"), "no_space")
        case .catalog: (.internalServerError, "catalog")
        case .io: (.internalServerError, "io")
        }
    return errorResponse(status, code, error.message)
}

/// `{"error": {"code": CODE, "message": MESSAGE}}`.
func errorResponse(_ status: HTTPResponse.Status, _ code: String, _ message: String) -> Response {
    struct Body: Encodable {
        struct Detail: Encodable {
            var code: String
            var message: String
        }
        var error: Detail
    }
    return jsonResponse(status, Body(error: .init(code: code, message: message)))
}

func jsonResponse(_ status: HTTPResponse.Status, _ value: any Encodable) -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
    return jsonResponse(status, raw: String(decoding: data, as: UTF8.self))
}

func jsonResponse(_ status: HTTPResponse.Status, raw: String) -> Response {
    Response(
        status: status, headers: [.contentType: "application/json"],
        body: ResponseBody(byteBuffer: ByteBuffer(string: raw)))
}
