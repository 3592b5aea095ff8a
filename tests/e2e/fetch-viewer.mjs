// Unpacks the prebuilt OHIF viewer (the `dist/` of the npm package named in package.json's
// config.viewer) into viewer/dist, once per pinned version.
//
// The package is fetched with `npm pack` rather than installed: its `dist/` is a finished
// static site, while installing it would also pull the build-time dependencies it lists
// (webpack loaders, React, codecs...), which nothing here needs. The tarball is checked
// against the pinned config.viewerIntegrity, as a lockfile entry would be.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const { viewer: spec, viewerIntegrity: integrity } = JSON.parse(
  readFileSync(join(here, 'package.json'), 'utf8'),
).config;
const target = join(here, 'viewer');
const stamp = join(target, 'VERSION');
const pinned = `${spec} ${integrity}\n`;

if (existsSync(join(target, 'dist', 'index.html')) && existsSync(stamp) && readFileSync(stamp, 'utf8') === pinned) {
  console.log(`${spec} is already unpacked in ${target}/dist`);
  process.exit(0);
}

const work = mkdtempSync(join(tmpdir(), 'filmless-viewer-'));
try {
  console.log(`fetching ${spec} with npm pack`);
  const packed = JSON.parse(
    execFileSync('npm', ['pack', spec, '--json', '--pack-destination', work], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }),
  )[0];
  const tarball = join(work, packed.filename);
  const actual = 'sha512-' + createHash('sha512').update(readFileSync(tarball)).digest('base64');
  if (actual !== integrity) {
    throw new Error(`${spec}: the tarball's integrity is ${actual}, package.json pins ${integrity}`);
  }
  execFileSync('tar', ['-xzf', tarball, '-C', work, 'package/dist']);
  rmSync(target, { recursive: true, force: true });
  mkdirSync(target);
  renameSync(join(work, 'package', 'dist'), join(target, 'dist'));
  writeFileSync(stamp, pinned);
  console.log(`unpacked ${spec} into ${target}/dist`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
