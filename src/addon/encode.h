// SPDX-License-Identifier: Apache-2.0
//
// heaptap native addon, profile encoding part (encode.cc): the sample records of a pprof
// heap profile, written from a region snapshot's counters and the agent's per-process
// location lists (src/agent/pprof.ts builds everything else of the profile).
#ifndef HEAPTAP_ADDON_ENCODE_H
#define HEAPTAP_ADDON_ENCODE_H

#include <napi.h>

// Adds `encodeSamples` to the addon's exports (called once from addon.cc's Init).
void InitEncode(Napi::Env env, Napi::Object exports);

#endif
