/// Rules for the names of pools, stores and volumes: they become file names in the mount and keys in
/// the catalog, so they must be safe as one path component.
public enum Names {
    public static let maxLength = 200

    /// Returns nil when `name` is acceptable, else the reason.
    public static func problem(with name: String, what: String) -> String? {
        if name.isEmpty { return "\(what) name is empty" }
        if name.utf8.count > maxLength { return "\(what) name is longer than \(maxLength) bytes" }
        if name == "." || name == ".." { return "\(what) name '\(name)' is reserved" }
        if name.hasPrefix(".") { return "\(what) name '\(name)' may not start with '.'" }
        for u in name.unicodeScalars {
            if u == "/" { return "\(what) name '\(name)' may not contain '/'" }
            if u.value == 0 { return "\(what) name may not contain NUL" }
            if u.value < 0x20 || u.value == 0x7f { return "\(what) name may not contain control characters" }
        }
        if name.hasSuffix(".img") { return "\(what) name '\(name)' may not end in '.img' (the mount adds it)" }
        return nil
    }
}
