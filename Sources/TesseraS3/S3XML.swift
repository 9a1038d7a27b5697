// S3XML — just enough XML for S3's answers: ListObjectsV2 pages and <Error> bodies.
//
// State: none (pure functions).
// Invariants:
// - S3 answers are flat, well-formed XML without CDATA: an element's text is everything between
//   `<Name>` and the next `</Name>`, and `<` never appears inside text (it is escaped as &lt;).
// - Text is entity-unescaped (&amp; &lt; &gt; &quot; &apos; and numeric &#N; / &#xH;) exactly once, so a
//   key such as "a&b" comes back as "a&b", not "a&amp;b".

/// One object of a listing.
public struct S3Object: Sendable, Equatable {
    public var key: String
    public var size: UInt64
}

/// One page of ListObjectsV2.
public struct S3ListPage: Sendable, Equatable {
    public var objects: [S3Object]
    /// The token for the next page, when the listing is truncated.
    public var continuationToken: String?
}

enum S3XML {
    /// The unescaped texts of every `<name>…</name>` in `xml`, in order.
    static func texts(of name: String, in xml: Substring) -> [String] { blocks(of: name, in: xml).map(unescape) }

    static func text(of name: String, in xml: Substring) -> String? { texts(of: name, in: xml).first }

    /// The blocks `<name>…</name>` (their inner XML, not unescaped).
    static func blocks(of name: String, in xml: Substring) -> [Substring] {
        var out: [Substring] = []
        let open = "<\(name)>"
        let close = "</\(name)>"
        var rest = xml
        while let o = rest.range(of: open) {
            guard let c = rest.range(of: close, range: o.upperBound..<rest.endIndex) else { break }
            out.append(rest[o.upperBound..<c.lowerBound])
            rest = rest[c.upperBound...]
        }
        return out
    }

    /// Parses a ListObjectsV2 answer; nil when it is not one.
    static func listPage(_ xml: String) -> S3ListPage? {
        let all = xml[...]
        guard all.contains("<ListBucketResult") else { return nil }
        var objects: [S3Object] = []
        for block in blocks(of: "Contents", in: all) {
            guard let key = text(of: "Key", in: block), let size = text(of: "Size", in: block).flatMap({ UInt64($0) })
            else { return nil }
            objects.append(S3Object(key: key, size: size))
        }
        let truncated = text(of: "IsTruncated", in: all) == "true"
        let token = truncated ? text(of: "NextContinuationToken", in: all) : nil
        if truncated && token == nil { return nil }
        return S3ListPage(objects: objects, continuationToken: token)
    }

    /// (Code, Message) of an `<Error>` body.
    static func error(_ xml: String) -> (code: String?, message: String?)? {
        let all = xml[...]
        guard let block = blocks(of: "Error", in: all).first else { return nil }
        let message = text(of: "Message", in: block)
        return (text(of: "Code", in: block), message?.isEmpty == true ? nil : message)
    }

    static func unescape(_ s: Substring) -> String {
        guard s.contains("&") else { return String(s) }
        var out = ""
        var i = s.startIndex
        while i < s.endIndex {
            let ch = s[i]
            guard ch == "&", let semi = s[i...].firstIndex(of: ";"), s.distance(from: i, to: semi) <= 10 else {
                out.append(ch)
                i = s.index(after: i)
                continue
            }
            let entity = s[s.index(after: i)..<semi]
            var decoded: String?
            switch entity {
            case "amp": decoded = "&"
            case "lt": decoded = "<"
            case "gt": decoded = ">"
            case "quot": decoded = "\""
            case "apos": decoded = "'"
            default:
                if entity.hasPrefix("#x") || entity.hasPrefix("#X") {
                    decoded = UInt32(entity.dropFirst(2), radix: 16).flatMap(Unicode.Scalar.init).map { String($0) }
                } else if entity.hasPrefix("#") {
                    decoded = UInt32(entity.dropFirst(1)).flatMap(Unicode.Scalar.init).map { String($0) }
                }
            }
            if let decoded {
                out += decoded
                i = s.index(after: semi)
            } else {
                out.append(ch)
                i = s.index(after: i)
            }
        }
        return out
    }
}
