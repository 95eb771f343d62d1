// Checks the packed package (npm run check:package; test/runtimes/run.mjs runs it on its tarball):
//   - the tarball holds exactly the files the package needs (no tests, sources, maps or fixtures);
//   - every path of package.json (main, module, types, typesVersions, bin, exports) is in it;
//   - dist/index.js, dist/llama2c.js and dist/workerd.js import no bare specifier, so the ESM dist
//     loads from a plain <script type="module"> without a bundler or an import map;
//   - dist/workerd.js holds no base64 build and imports exactly the three .wasm files shipped beside
//     it, and the builds embedded in dist/index.js and dist/index.cjs are byte for byte those files;
//   - publint (strict) and arethetypeswrong report nothing.
// Usage: node scripts/pack-check.mjs [package.tgz]   (without a tarball: npm run build, then npm pack)
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(import.meta.url), '..', '..');
const BUILDS = ['relaxed-simd', 'simd', 'scalar', 'relaxed-simd-threads', 'simd-threads'];
/** The builds the workerd entry imports: Workers have no threads. */
const WORKERD_BUILDS = ['relaxed-simd', 'simd', 'scalar'];

/** What the tarball holds, exactly. Adding a file to the package means adding it here. */
export const EXPECTED_FILES = [
  'LICENSE',
  'README.md',
  'package.json',
  'dist/cli.js',
  'dist/index.js',
  'dist/index.cjs',
  'dist/index.d.ts',
  'dist/index.d.cts',
  'dist/llama2c.js',
  'dist/llama2c.cjs',
  'dist/llama2c.d.ts',
  'dist/llama2c.d.cts',
  'dist/workerd.js',
  'dist/kivi.wasm.d.ts',
  'dist/kivi.wasm.d.cts',
  ...BUILDS.map((b) => `dist/kivi.${b}.wasm`),
].sort();

/** Module specifiers of static imports, re-exports and literal dynamic imports in ESM text. */
export function importSpecifiers(code) {
  const found = new Set();
  const patterns = [
    /^\s*import\s+(?:[\w$*{}\s,]+\s+from\s+)?["']([^"']+)["']/gm,
    /^\s*export\s+(?:\*|\{[^}]*\})\s*(?:as\s+[\w$]+\s+)?from\s+["']([^"']+)["']/gm,
    /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g,
  ];
  for (const pattern of patterns) for (const match of code.matchAll(pattern)) found.add(match[1]);
  return [...found];
}

const isBare = (specifier) => !/^(\.{1,2}\/|\/|[a-z][a-z0-9+.-]*:)/i.test(specifier);

/** Every relative path package.json points at. */
function packagePaths(pkg) {
  const paths = [];
  const walk = (value) => {
    if (typeof value === 'string') paths.push(value);
    else if (Array.isArray(value)) value.forEach(walk);
    else if (value && typeof value === 'object') Object.values(value).forEach(walk);
  };
  for (const field of ['main', 'module', 'types', 'bin', 'exports', 'typesVersions']) walk(pkg[field]);
  return paths.filter((p) => p.startsWith('./') || p.startsWith('dist/')).map((p) => p.replace(/^\.\//, ''));
}

function embeddedBuilds(code) {
  const builds = {};
  for (const build of BUILDS) {
    const match = code.match(new RegExp(`["']${build}["']\\s*:\\s*["']([A-Za-z0-9+/=]+)["']`));
    if (match) builds[build] = Buffer.from(match[1], 'base64');
  }
  return builds;
}

function run(command, args, cwd) {
  try {
    return { ok: true, out: execFileSync(command, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) };
  } catch (error) {
    return { ok: false, out: `${error.stdout ?? ''}${error.stderr ?? ''}` || String(error) };
  }
}

/** Checks a packed tarball; returns { files, problems, publint, attw } (problems empty = all good). */
export function checkTarball(tarball) {
  const problems = [];
  const dir = mkdtempSync(join(tmpdir(), 'kivi-wasm-pack-check-'));
  try {
    execFileSync('tar', ['-xzf', tarball, '-C', dir]);
    const pkgDir = join(dir, 'package');
    const files = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n').filter(Boolean).map((f) => f.replace(/^package\//, '')).sort();

    const unexpected = files.filter((f) => !EXPECTED_FILES.includes(f));
    const missing = EXPECTED_FILES.filter((f) => !files.includes(f));
    if (unexpected.length) problems.push(`unexpected files in the tarball: ${unexpected.join(', ')}`);
    if (missing.length) problems.push(`missing from the tarball: ${missing.join(', ')}`);

    const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
    for (const path of packagePaths(pkg)) {
      if (path.includes('*')) {
        const [head, tail] = path.split('*');
        if (!files.some((f) => f.startsWith(head) && f.endsWith(tail))) problems.push(`package.json: ${path} matches no file`);
      } else if (!files.includes(path)) {
        problems.push(`package.json points at ${path}, which is not in the tarball`);
      }
    }

    for (const file of ['dist/index.js', 'dist/llama2c.js', 'dist/workerd.js']) {
      if (!files.includes(file)) continue;
      const bare = importSpecifiers(readFileSync(join(pkgDir, file), 'utf8')).filter(isBare);
      if (bare.length) problems.push(`${file} imports bare specifiers (needs a bundler or an import map): ${bare.join(', ')}`);
    }

    if (files.includes('dist/workerd.js')) {
      const code = readFileSync(join(pkgDir, 'dist/workerd.js'), 'utf8');
      if (/AGFzbQ/.test(code)) problems.push('dist/workerd.js embeds base64 wasm');
      const imports = importSpecifiers(code).sort();
      const expected = WORKERD_BUILDS.map((b) => `./kivi.${b}.wasm`).sort();
      if (JSON.stringify(imports) !== JSON.stringify(expected)) problems.push(`dist/workerd.js imports ${imports.join(', ')}; expected ${expected.join(', ')}`);
    }
    for (const file of ['dist/index.js', 'dist/index.cjs']) {
      if (!files.includes(file)) continue;
      const builds = embeddedBuilds(readFileSync(join(pkgDir, file), 'utf8'));
      for (const build of BUILDS) {
        const shipped = join(pkgDir, 'dist', `kivi.${build}.wasm`);
        if (!builds[build]) problems.push(`${file}: no embedded ${build} build found`);
        else if (existsSync(shipped) && !builds[build].equals(readFileSync(shipped))) problems.push(`${file}: the embedded ${build} build differs from dist/kivi.${build}.wasm`);
      }
    }

    const bin = join(root, 'node_modules', '.bin');
    const publint = run(join(bin, 'publint'), ['run', tarball, '--strict'], root);
    if (!publint.ok || !/All good/.test(publint.out)) problems.push(`publint:\n${publint.out.trim()}`);
    const attw = run(join(bin, 'attw'), [tarball, '--include-entrypoints', ...BUILDS.map((b) => `./kivi.${b}.wasm`), '--format', 'table-flipped', '--no-color'], root);
    if (!attw.ok || !/No problems found/.test(attw.out)) problems.push(`arethetypeswrong:\n${attw.out.trim()}`);
    return { files, problems, publint: publint.out.trim(), attw: attw.out.trim() };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  let tarball = process.argv[2];
  let packDir;
  let problems;
  try {
    if (!tarball) {
      execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' });
      packDir = mkdtempSync(join(tmpdir(), 'kivi-wasm-pack-'));
      const packed = JSON.parse(execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', packDir], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));
      tarball = join(packDir, packed[0].filename);
    }
    const result = checkTarball(tarball);
    problems = result.problems;
    console.log(`${basename(tarball)}: ${result.files.length} files\n  ${result.files.join('\n  ')}\n`);
    console.log(result.publint, '\n');
    console.log(result.attw, '\n');
  } finally {
    if (packDir) rmSync(packDir, { recursive: true, force: true });
  }
  if (problems.length) {
    console.error(`pack-check: ${problems.length} problem(s):\n- ${problems.join('\n- ')}`);
    process.exit(1);
  }
  console.log('pack-check: the package is complete and clean');
}
