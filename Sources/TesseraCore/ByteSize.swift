/// Sizes as users type them: a whole number with an optional K, M, G, T or P suffix (powers of 1024;
/// an optional trailing "B" or "iB" is accepted). Parsing refuses negatives, zero where asked, overflow,
/// and anything unparsable.
public enum ByteSize {
    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case empty, notANumber(String), overflow(String)
        public var description: String {
            switch self {
            case .empty: return "size is empty"
            case .notANumber(let s): return "'\(s)' is not a size (use a whole number with K, M, G or T, e.g. 40G)"
            case .overflow(let s): return "size '\(s)' is too large"
            }
        }
    }

    public static func parse(_ text: String) throws(ParseError) -> UInt64 {
        var s = text.trimmingWhitespace().uppercased()
        if s.isEmpty { throw .empty }
        if s.hasSuffix("IB") { s.removeLast(2) } else if s.hasSuffix("B") { s.removeLast() }
        var shift: UInt64 = 0
        if let last = s.last, let p = "KMGTP".firstIndex(of: last) {
            shift = UInt64("KMGTP".distance(from: "KMGTP".startIndex, to: p) + 1) * 10
            s.removeLast()
        }
        guard !s.isEmpty, s.allSatisfy({ $0.isASCII && $0.isNumber }), let n = UInt64(s) else {
            throw .notANumber(text)
        }
        let (v, o) = n.multipliedReportingOverflow(by: 1 << shift)
        if o { throw .overflow(text) }
        return v
    }

    /// Human form with one decimal, e.g. "1.5G", "512K", "0".
    public static func format(_ bytes: UInt64) -> String {
        let units = ["", "K", "M", "G", "T", "P"]
        var v = Double(bytes)
        var u = 0
        while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
        if u == 0 { return "\(bytes)" }
        let rounded = (v * 10).rounded() / 10
        return rounded == rounded.rounded() ? "\(Int(rounded))\(units[u])" : "\(rounded)\(units[u])"
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
