// SplitMix64 — the seeded random generator of every randomized test: one UInt64 of state, so a test
// that prints its seed can be replayed exactly (single-threaded parts; thread interleavings are not).
//
// Address space: none. Invariants: the same seed yields the same sequence on every platform and run;
// `split()` derives an independent generator (one per thread) without touching a shared one.

public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A new generator seeded from this one (advances this one by one step).
    public mutating func split() -> SplitMix64 { SplitMix64(seed: next()) }

    /// `count` random bytes (filled a word at a time: tests run unoptimised).
    public mutating func bytes(_ count: Int) -> [UInt8] {
        var words = [UInt64](repeating: 0, count: (count + 7) / 8)
        for i in words.indices { words[i] = next().littleEndian }
        return words.withUnsafeBytes { Array($0.prefix(count)) }
    }

    /// True with probability `p`.
    public mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &self) < p }
}
