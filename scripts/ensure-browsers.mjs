#!/usr/bin/env node
// Makes sure the Debian browsers the tests drive are installed, so that `npm test` passes on a bare
// machine with nothing installed by hand: a missing browser is installed with apt-get (Debian's
// packages, the only source of browsers this project uses; nothing is downloaded from elsewhere)
// when this runs as root, and otherwise the run stops with the command to type.
//
//   node scripts/ensure-browsers.mjs [chromium] [firefox-esr]     (default: chromium)
//
// `npm test` runs it for chromium (test/demo-browser.test.ts); `.ci/run` and `npm run
// test:runtimes` also need firefox-esr. CHROMIUM_PATH / FIREFOX_PATH point at browsers elsewhere.

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const BROWSERS = {
  chromium: { path: process.env.CHROMIUM_PATH || '/usr/bin/chromium', packages: ['chromium'] },
  'firefox-esr': { path: process.env.FIREFOX_PATH || '/usr/bin/firefox-esr', packages: ['firefox-esr'] },
};

const wanted = process.argv.slice(2);
for (const name of wanted) {
  if (!(name in BROWSERS)) {
    console.error(`ensure-browsers: unknown browser ${JSON.stringify(name)}; expected ${Object.keys(BROWSERS).join(' or ')}`);
    process.exit(2);
  }
}
const missing = (wanted.length > 0 ? wanted : ['chromium']).filter((name) => !existsSync(BROWSERS[name].path));
if (missing.length === 0) process.exit(0);

const packages = missing.flatMap((name) => BROWSERS[name].packages);
const command = `apt-get update && apt-get install -y ${packages.join(' ')}`;
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const hasApt = spawnSync('sh', ['-c', 'command -v apt-get'], { stdio: 'ignore' }).status === 0;
if (!isRoot || !hasApt) {
  console.error(
    `ensure-browsers: the tests need ${missing.map((n) => BROWSERS[n].path).join(' and ')}, which ${missing.length > 1 ? 'are' : 'is'} missing.\n` +
    (hasApt
      ? `Install Debian's package${packages.length > 1 ? 's' : ''} as root: sudo sh -c '${command}'\n`
      : `This is not a Debian-like system (no apt-get): install ${packages.join(' and ')} and set CHROMIUM_PATH / FIREFOX_PATH.\n`),
  );
  process.exit(1);
}
console.error(`ensure-browsers: installing Debian's ${packages.join(', ')} (missing: ${missing.map((n) => BROWSERS[n].path).join(', ')})`);
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
for (const args of [['update', '-qq'], ['install', '-y', '-qq', ...packages]]) {
  const result = spawnSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env });
  if (result.status !== 0) {
    console.error(`ensure-browsers: apt-get ${args.join(' ')} failed (exit code ${result.status}${result.error ? `, ${result.error.message}` : ''})`);
    process.exit(1);
  }
}
const still = missing.filter((name) => !existsSync(BROWSERS[name].path));
if (still.length > 0) {
  console.error(`ensure-browsers: apt-get installed ${packages.join(', ')} but ${still.map((n) => BROWSERS[n].path).join(', ')} is still missing`);
  process.exit(1);
}
