// Child process of test/symbolize-truncated.test.ts (a fault here must not take the test
// worker with it): symbolizes the functions of one ELF file again and again, each time with
// a new native Symbolizer (so the file is opened and read anew), for MS milliseconds.
// Prints one JSON line: rounds, how many answered, how many said the file changed.
//   node symbolize-loop.ts FILE MS HEXADDR...
import { native } from '../../src/native.ts';

const [file, ms, ...hex] = process.argv.slice(2);
const addrs = BigUint64Array.from(hex.map((h) => BigInt(`0x${h}`)));
const end = Date.now() + Number(ms);
let rounds = 0, named = 0, changed = 0, other = 0;
while (Date.now() < end) {
  const s = new native.Symbolizer({ debugDirs: [] });
  const r = s.resolve([file!], file!, '', addrs);
  if (/changed while it was read/.test(r.error)) changed++;
  else if (r.found && r.frames.length > 0) named++;
  else other++;
  s.close();
  rounds++;
}
process.stdout.write(`${JSON.stringify({ rounds, named, changed, other })}\n`);
