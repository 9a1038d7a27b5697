// Byte arrays on the data path: typed-throwing access to their storage.
//
// `Array.withUnsafeBytes` rethrows `any Error`, which a `throws(StoreError)` function cannot pass on;
// these wrappers keep the error typed.

extension Array where Element == UInt8 {
    /// Calls `body` with the array's bytes, passing on its StoreError.
    public func withStoreBytes<R>(_ body: (UnsafeRawBufferPointer) throws(StoreError) -> R) throws(StoreError) -> R {
        let result: Result<R, StoreError> = withUnsafeBytes { p in
            do throws(StoreError) { return .success(try body(p)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Calls `body` with the array's mutable bytes, passing on its StoreError.
    public mutating func withMutableStoreBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws(StoreError) -> R)
        throws(StoreError) -> R
    {
        let result: Result<R, StoreError> = withUnsafeMutableBytes { p in
            do throws(StoreError) { return .success(try body(p)) } catch { return .failure(error) }
        }
        return try result.get()
    }
}
