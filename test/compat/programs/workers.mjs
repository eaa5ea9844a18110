// Node.js worker_threads: two waves of four workers, each building objects and JSON and
// compressing buffers with zlib (native allocations), then ending.
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { deflateSync, inflateSync } from 'node:zlib';

if (isMainThread) {
  const rounds = Number(process.argv[2] ?? 300);
  let total = 0;
  for (let wave = 0; wave < 2; wave++) {
    const results = await Promise.all(
      [0, 1, 2, 3].map(
        (k) =>
          new Promise((resolve, reject) => {
            const w = new Worker(new URL(import.meta.url), { workerData: { id: wave * 4 + k, rounds } });
            w.once('message', resolve);
            w.once('error', reject);
          }),
      ),
    );
    total += results.reduce((a, b) => a + b, 0);
  }
  console.log(`workers 8 rounds ${rounds} checksum ${total}`);
} else {
  const { id, rounds } = workerData;
  let sum = 0;
  for (let r = 0; r < rounds; r++) {
    const objs = Array.from({ length: 200 }, (_, j) => ({ id, r, j, name: `w${id}-${r}-${j}` }));
    const json = JSON.stringify(objs);
    sum += JSON.parse(json).length;
    const buf = Buffer.alloc(16384 + ((r * 131) % 8192), (id + r) & 0xff);
    const packed = deflateSync(buf);
    sum += inflateSync(packed).length % 1000;
  }
  parentPort.postMessage(sum);
}
