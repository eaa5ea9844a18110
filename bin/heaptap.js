#!/usr/bin/env node
// The package's `heaptap` command (npx heaptap). heaptap's sources are TypeScript that
// Node runs directly (type stripping: Node >= 22.18, or 23.6 and later); an older Node
// gets a clear message instead of a syntax error.
const [major, minor] = process.versions.node.split('.').map(Number);
const stripping = major > 23 || (major === 23 && minor >= 6) || (major === 22 && minor >= 18);
if (!stripping) {
  process.stderr.write(
    `heaptap: needs Node.js 22.18 or newer (it runs its TypeScript sources directly); this is ` +
      `Node.js ${process.versions.node} (${process.execPath}).\n` +
      `Use the Node.js that \`npm install\` puts in node_modules/.bin (npx heaptap, npm exec heaptap), ` +
      `or ./heaptap in the heaptap checkout.\n`,
  );
  process.exit(2);
}
try {
  const { runMain } = await import('../src/cli.ts');
  await runMain(process.argv.slice(2));
} catch (e) {
  if (e && e.code === 'ERR_UNSUPPORTED_NODE_MODULES_TYPE_STRIPPING') {
    process.stderr.write(
      'heaptap: Node.js does not run TypeScript from inside node_modules; run heaptap from its ' +
        'own checkout (./heaptap, or npx heaptap there).\n',
    );
    process.exit(2);
  }
  throw e;
}
