/// A control-plane failure: a documented code (also the CLI's exit status) and one line for the user.
public struct TesseraError: Error, Equatable, Sendable, Codable, CustomStringConvertible {
    public enum Code: Int32, Sendable, Codable {
        /// Bad input: a name, size or option that can never work.
        case invalid = 2
        /// The named pool, store, volume or file does not exist.
        case notFound = 3
        /// The name is taken.
        case exists = 4
        /// The object is in use (an open image, a running mount, a locked catalog).
        case busy = 5
        /// The catalog is missing, damaged or of an unknown format.
        case catalog = 6
        /// A store or the system failed.
        case io = 7
        /// No room left.
        case noSpace = 8
        /// The change would take a domain past one of its quotas (EDQUOT for a file gesture).
        case quota = 9
    }
    public var code: Code
    public var message: String
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { message }
}
