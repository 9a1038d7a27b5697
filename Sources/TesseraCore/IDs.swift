/// A chunk of one placement unit. IDs are handed out from a per-unit counter that only grows, so a
/// freed ID is never reused and a stale reference can never alias new data. 0 means "no chunk".
public struct ChunkID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ raw: UInt64) { self.rawValue = raw }
    public static let none = ChunkID(0)
    public var isNone: Bool { rawValue == 0 }
    /// A map slot of a clone that reads as zeros instead of falling through to the parent (discarded
    /// there). Never a real chunk: unit bits 0xffff are reserved.
    public static let tombstone = ChunkID(UInt64.max)
    public var isTombstone: Bool { rawValue == UInt64.max }
    /// A real chunk of a unit (neither none nor tombstone).
    public var isReal: Bool { rawValue != 0 && rawValue != UInt64.max }
    public static func < (a: ChunkID, b: ChunkID) -> Bool { a.rawValue < b.rawValue }
    /// Hex, as chunk files and objects are named on the stores (unit ID in the top 16 bits).
    public var description: String { "chunk " + String(rawValue, radix: 16) }

    /// The top 16 bits name the placement unit that owns the chunk, the low 48 bits count within that
    /// unit, so one 64-bit map slot says where a chunk lives without a second table. The unit, not a
    /// physical store, is named: the stores under a unit can change without touching any map.
    public static let serialBits: UInt64 = 48
    public init(unit: UnitID, serial: UInt64) {
        precondition(unit.rawValue > 0 && unit.rawValue < UnitID.limit && serial < 1 << Self.serialBits)
        rawValue = UInt64(unit.rawValue) << Self.serialBits | serial
    }
    public var unit: UnitID { UnitID(Int64(rawValue >> Self.serialBits)) }
    public var serial: UInt64 { rawValue & ((1 << Self.serialBits) - 1) }
}

/// Row id of a volume in the catalog; never reused (AUTOINCREMENT), so it also names the inode.
public struct VolumeID: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    public var rawValue: Int64
    public init(rawValue: Int64) { self.rawValue = rawValue }
    public init(_ raw: Int64) { self.rawValue = raw }
    public var description: String { "volume#\(rawValue)" }
}

/// Row id of a pool in the catalog.
public struct PoolID: RawRepresentable, Hashable, Sendable, Codable {
    public var rawValue: Int64
    public init(rawValue: Int64) { self.rawValue = rawValue }
    public init(_ raw: Int64) { self.rawValue = raw }
}

/// Row id of a placement unit in the catalog: what a chunk ID names (its top 16 bits). A unit owns the
/// serials of its chunks and is served by its member stores — today exactly one; a mirror's legs or a
/// store and its replacement later — so stores can come and go under it without rewriting any map.
public struct UnitID: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    public var rawValue: Int64
    public init(rawValue: Int64) { self.rawValue = rawValue }
    public init(_ raw: Int64) { self.rawValue = raw }
    /// Unit ids are below this (0xffff is the tombstone's).
    public static let limit: Int64 = 0xffff
    public var description: String { "unit #\(rawValue)" }
}
