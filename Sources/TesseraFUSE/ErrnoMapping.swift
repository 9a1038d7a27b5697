import TesseraCore

#if canImport(Glibc)
    import Glibc
#endif

// The one place where Tessera's errors become errno values for the kernel.

extension StoreError {
    var errno: Int32 {
        switch self {
        case .io: return EIO
        case .noSpace: return ENOSPC
        case .readOnly: return EROFS
        case .missing: return EIO
        case .corrupt: return EIO
        }
    }
}

extension TesseraError {
    var errno: Int32 {
        switch code {
        case .invalid: return EINVAL
        case .notFound: return ENOENT
        case .exists: return EEXIST
        case .busy: return EBUSY
        case .catalog, .io: return EIO
        case .noSpace: return ENOSPC
        case .quota: return EDQUOT
        }
    }
}
