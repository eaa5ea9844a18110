// SPDX-License-Identifier: Apache-2.0
//
// heaptap native addon, symbolization part (symbolize.cc): ELF/DWARF symbolization of module
// files with elfutils' libdwfl/libdw, exposed as the JS class `Symbolizer`. See
// docs/symbolization.md for the design; src/symbolize.ts is the typed wrapper with the policy
// (path candidates, address caching); this side only opens files, caches them and resolves.
#ifndef HEAPTAP_ADDON_SYMBOLIZE_H
#define HEAPTAP_ADDON_SYMBOLIZE_H

#include <napi.h>

// Adds `Symbolizer` to the addon's exports (called once from addon.cc's Init).
void InitSymbolize(Napi::Env env, Napi::Object exports);

#endif
