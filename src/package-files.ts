/** Files shipped with the package (rules/, examples/), found whether we run from src/ (tsx) or dist/. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

function packageRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'rules', 'filter', 'forward.hbs'))) return (root = dir);
    dir = dirname(dir);
  }
  throw new Error('cannot find the vlan-gateway package directory (rules/ is missing)');
}

export const packageFile = (...parts: string[]) => join(packageRoot(), ...parts);

/** The write-up's two-VLAN example, the lab's default config. */
export const exampleConfigPath = () => packageFile('examples', 'lab.yaml');
