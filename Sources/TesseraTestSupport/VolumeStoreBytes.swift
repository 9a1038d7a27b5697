// VolumeStoreBytes — byte-array I/O on any volume stack (a Volume, a view, a layer over them), for tests.
import TesseraCore

extension VolumeStore {
    // Array's closures rethrow untyped errors; a volume store only ever throws StoreError.
    public func write(_ bytes: [UInt8], at offset: UInt64) throws(StoreError) {
        do { try bytes.withUnsafeBytes { try write(at: offset, from: $0) } } catch { throw error as! StoreError }
    }

    /// Reads up to `count` bytes; the result is short at the end of the volume.
    public func read(at offset: UInt64, count: Int) throws(StoreError) -> [UInt8] {
        var out = [UInt8](repeating: 0xEE, count: count)
        do {
            let n = try out.withUnsafeMutableBytes { try read(at: offset, into: $0) }
            return Array(out[0..<n])
        } catch { throw error as! StoreError }
    }
}
