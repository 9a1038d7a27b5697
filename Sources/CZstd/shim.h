// C shim over libzstd (Debian 12: 1.5.4). Only the one-shot context API is used: ZSTD_compressCCtx /
// ZSTD_decompressDCtx with one context per thread at a time (a context is not thread-safe).
#ifndef TESSERA_CZSTD_SHIM_H
#define TESSERA_CZSTD_SHIM_H

#include <zstd.h>

#endif
