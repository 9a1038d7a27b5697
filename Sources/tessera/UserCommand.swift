import ArgumentParser
import Foundation
import TesseraControl
import TesseraEngine

struct UserCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user", abstract: "Add, list and remove HTTP API users and their tokens.",
        discussion: """
            A user reaches the HTTP API (tessera mount --api HOST:PORT) with 'Authorization: Bearer TOKEN'. \
            Roles: admin (everything), domain-admin (everything inside its domain), operator (volumes and \
            snapshots inside its domain; no deletes, no settings), auditor (reads everything, changes \
            nothing). domain-admin and operator need --domain; admin and auditor take none. The token is \
            printed once and stored only as a SHA-256 hash: a lost token is replaced with 'user token NAME \
            --rotate'. Root on the command line (the control socket) needs no user.
            Exit codes: 2 bad input (unknown role, --domain missing or not allowed), 3 unknown user or \
            domain, 4 the user exists.
            """,
        subcommands: [Add.self, List.self, Remove.self, Token.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a user and print its API token (shown only this once).")
        @OptionGroup var data: DataOptions
        @Argument var name: String
        @Option(help: "admin, domain-admin, operator or auditor.") var role: String
        @Option(help: "The domain a domain-admin or operator acts in.") var domain: String?

        func validate() throws {
            try checkName(name, "user")
            if let domain { try checkName(domain, "domain") }
            do {
                try Engine.checkRoleDomain(try Engine.role(role), domain)
            } catch {
                throw failure(error)
            }
        }

        func run() throws {
            let reply = try perform(.userAdd(name: name, role: role, domain: domain), data.directory)
            printToken(reply, "added user \(name) (\(role)\(domain.map { " in domain \($0)" } ?? ""))")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users with their roles and domains.")
        @OptionGroup var data: DataOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let users = try perform(.userList, data.directory).users ?? []
            if output.json { return printJSON(users) }
            printTable(
                ["NAME", "ROLE", "DOMAIN", "CREATED"],
                users.map { u in
                    [
                        u.name, u.role.rawValue, u.domain ?? "(all)",
                        ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: u.createdAt)),
                    ]
                })
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a user; its token stops working at once.")
        @OptionGroup var data: DataOptions
        @Argument var name: String

        func validate() throws { try checkName(name, "user") }

        func run() throws {
            _ = try perform(.userRemove(name: name), data.directory)
            print("removed user \(name)")
        }
    }

    struct Token: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Give a user a new API token (printed once); the old one stops working at once.")
        @OptionGroup var data: DataOptions
        @Argument var name: String
        @Flag(help: "Required: replace the token (the old one cannot be shown again).") var rotate = false

        func validate() throws {
            try checkName(name, "user")
            if !rotate { throw invalid("a token is shown only when made: give --rotate to replace it") }
        }

        func run() throws {
            printToken(try perform(.userRotateToken(name: name), data.directory), "new token for user \(name)")
        }
    }
}

/// The line saying what was done, then the token alone on the next line (for `| tail -1`).
private func printToken(_ reply: ControlReply, _ what: String) {
    print("\(what); its API token (shown only now):")
    print(reply.token ?? "")
}
