// The OTLP profiles message types, loaded with protobufjs from proto/opentelemetry (the
// v1development .proto files, v1.10+ shapes; see proto/opentelemetry/README.md). Loaded
// once, on first use.
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import protobuf from 'protobufjs';

const PROTO_ROOT = fileURLToPath(new URL('../../proto/', import.meta.url));
const SERVICE = 'opentelemetry/proto/collector/profiles/v1development/profiles_service.proto';

export interface OtlpProfileTypes {
  ExportProfilesServiceRequest: protobuf.Type;
  ExportProfilesServiceResponse: protobuf.Type;
}

let types: OtlpProfileTypes | null = null;

export function otlpProfileTypes(): OtlpProfileTypes {
  if (types) return types;
  const root = new protobuf.Root();
  // Imports are written from the proto root (opentelemetry/proto/...), as upstream's are.
  root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(PROTO_ROOT, target));
  root.loadSync(SERVICE, { keepCase: true });
  root.resolveAll();
  const pkg = 'opentelemetry.proto.collector.profiles.v1development';
  types = {
    ExportProfilesServiceRequest: root.lookupType(`${pkg}.ExportProfilesServiceRequest`),
    ExportProfilesServiceResponse: root.lookupType(`${pkg}.ExportProfilesServiceResponse`),
  };
  return types;
}
