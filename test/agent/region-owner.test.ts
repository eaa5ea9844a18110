// Region files the agent does not believe (issue 10, item 3): one that group or others may
// write (anyone could rewrite what the agent reads and the control area), and one whose
// owner is neither root, the agent's user, nor the user of the process it names.
import { chmodSync, chownSync } from 'node:fs';
import test, { type ExecutionContext } from 'ava';

import { createLogger } from '../../src/agent/log.ts';
import { listRegions } from '../../src/region.ts';
import { get, inProcessAgent, startTicker, tempDir, until } from './helpers.ts';

async function setup(t: ExecutionContext) {
  const { dir, cleanup } = await tempDir();
  t.teardown(cleanup);
  const fx = await startTicker(dir, { keepKib: 4, periodUs: 1000, t });
  const [region] = await listRegions(dir);
  return { dir, fx, region: region! };
}

async function agentOn(t: ExecutionContext, dir: string) {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({ format: 'json', write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) });
  const agent = await inProcessAgent(dir, [], { log, symbolize: false });
  t.teardown(() => agent.stop());
  const served = async (pid: number) => (await get(`${agent.url}/debug/heaptap/processes`)).text.includes(`"pid": ${pid}`);
  return { agent, lines, served };
}

test('the agent refuses a region file that group or others may write, says so once, and takes it once it is 0600', async (t) => {
  const { dir, fx, region } = await setup(t);
  chmodSync(region, 0o666);
  const { agent, lines, served } = await agentOn(t, dir);
  await agent.source.watcher.ready;
  t.false(await served(fx.pid), 'a world-writable region is served');
  const refused = lines.filter((l) => /^region refused/.test(String(l.msg)));
  t.is(refused.length, 1, JSON.stringify(lines));
  t.regex(String(refused[0]!.msg), /mode 0666 lets group or others write it/);
  t.is(refused[0]!.level, 'warn');
  // Polls go on without repeating the line; the owner's chmod makes it acceptable.
  await new Promise((r) => setTimeout(r, 600));
  t.is(lines.filter((l) => /^region refused/.test(String(l.msg))).length, 1, 'said once');
  chmodSync(region, 0o600);
  await until(() => served(fx.pid), 15_000, 'the region served once 0600');
});

test('the agent refuses a region whose owner is not root, itself or the process it names', async (t) => {
  if (process.geteuid?.() !== 0) t.fail('this test changes a file\'s owner: run it as root');
  const { dir, fx, region } = await setup(t);
  chownSync(region, 12345, 12345); // the ticker runs as root (uid 0)
  const { agent, lines, served } = await agentOn(t, dir);
  await agent.source.watcher.ready;
  await until(() => lines.some((l) => /^region refused/.test(String(l.msg))), 15_000, 'the refusal logged');
  t.false(await served(fx.pid));
  const refused = lines.find((l) => /^region refused/.test(String(l.msg)))!;
  t.regex(String(refused.msg), new RegExp(`its file belongs to uid 12345, process ${fx.pid} runs as uid 0`));
  chownSync(region, 0, 0);
  await until(() => served(fx.pid), 15_000, 'the region served once root\'s');
});
