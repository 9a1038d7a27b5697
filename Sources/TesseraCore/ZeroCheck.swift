#if canImport(Glibc)
    import Glibc
#endif

/// True when every byte of `buffer` is zero (memcmp against a static zero page).
public func isAllZero(_ buffer: UnsafeRawBufferPointer) -> Bool {
    guard let base = buffer.baseAddress else { return true }
    var done = 0
    while done < buffer.count {
        let n = min(zeroPageSize, buffer.count - done)
        if memcmp(base + done, zeroPage, n) != 0 { return false }
        done += n
    }
    return true
}

private let zeroPageSize = 65536
nonisolated(unsafe) private let zeroPage: UnsafeMutableRawPointer = {
    // Written once here, read-only afterwards.
    let p = UnsafeMutableRawPointer.allocate(byteCount: zeroPageSize, alignment: 4096)
    p.initializeMemory(as: UInt8.self, repeating: 0, count: zeroPageSize)
    return p
}()
