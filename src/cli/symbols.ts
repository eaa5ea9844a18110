// The symbolizer the CLI's profiles use.
import type { AsyncProfileSymbolizer } from '../profile.ts';

export type CliSymbolizer = AsyncProfileSymbolizer & { close(): void };

export async function makeSymbolizer(): Promise<CliSymbolizer | undefined> {
  // TODO: static import once src/symbolize.ts lands.
  const spec = '../symbolize.ts';
  try {
    const mod = (await import(spec)) as { Symbolizer: new () => CliSymbolizer };
    return new mod.Symbolizer();
  } catch {
    return undefined;
  }
}
