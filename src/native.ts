// The one module that loads the native addon (src/addon/build/heaptap.node, built by
// `make -C src/addon`). Everything else imports src/region.ts, which types and wraps it.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

import type {
  ControlUpdate,
  EncodeSamplesArgs,
  RegionConstants,
  RegionLayout,
  RegionSnapshot,
} from './region.ts';
import type { NativeSymbolizerConstructor } from './symbolize.ts';

/** What addon.cc exports; each method's contract is stated above it there. */
export interface NativeBinding {
  readRegion(path: string, sinceStack?: number, sincePoint?: number | bigint): RegionSnapshot;
  readRegionAsync(path: string, sinceStack?: number, sincePoint?: number | bigint): Promise<RegionSnapshot>;
  writeControl(path: string, control: ControlUpdate): void;
  dedupeFrames(frames: BigUint64Array): { unique: BigUint64Array; index: Uint32Array };
  trimMemory(): void;
  hasFileCapabilities(path: string): boolean;
  gzipAsync(data: Uint8Array, level?: number): Promise<Buffer>;
  lockFile(path: string): number;
  unlockFile(fd: number): void;
  encodeSamples(args: EncodeSamplesArgs): Uint8Array;
  readonly constants: RegionConstants;
  readonly layout: RegionLayout;
  /** symbolize.cc: ELF/DWARF symbolization with libdwfl (typed wrapper: src/symbolize.ts) */
  readonly Symbolizer: NativeSymbolizerConstructor;
}

export const addonPath = fileURLToPath(new URL('./addon/build/heaptap.node', import.meta.url));

function load(): NativeBinding {
  const require = createRequire(import.meta.url);
  try {
    return require(addonPath) as NativeBinding;
  } catch (cause) {
    throw new Error(
      `cannot load the heaptap addon ${addonPath} (build it with \`npm run build\` or ` +
        '`make -C src/addon` after `npm install`)',
      { cause },
    );
  }
}

export const native: NativeBinding = load();
