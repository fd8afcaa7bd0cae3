/**
 * What bench/load.ts runs in each new process (bundled, from the sources of the tree it measures): the config file's
 * load, whole as `vlan-gateway apply` runs it (loadChecked), or by phase (validateConfig as its two parts: the schema,
 * then the checks across fields), each phase's wall and CPU time.
 */
import { readFile } from 'node:fs/promises';
import { loadChecked } from '../src/cli/load-checked.js';
import { crossFieldProblems, schemaParse } from '../src/config/validate.js';
import { parseYaml } from '../src/config/yaml.js';
import { loadTemplatesAndProblems } from '../src/template/load.js';

export type Mode = 'total' | 'phases';

/** `reps` samples of `mode`, each a phase's wall ms by name and its CPU ms as NAME_cpu. */
export async function main(path: string, mode: Mode, reps: number): Promise<Array<Record<string, number>>> {
  const out: Array<Record<string, number>> = [];
  for (let i = 0; i < reps; i++) {
    // CPU time counts every thread of the process (the GC's helpers too): on a machine others share, it moves less
    // with their load than the wall time does.
    const sample: Record<string, number> = {};
    let wall = performance.now();
    let cpu = process.cpuUsage();
    const mark = (name: string) => {
      const [w, c] = [performance.now(), process.cpuUsage(cpu)];
      sample[name] = w - wall;
      sample[`${name}_cpu`] = (c.user + c.system) / 1000;
      wall = w;
      cpu = process.cpuUsage();
    };
    if (mode === 'total') {
      await loadChecked(path, undefined);
      mark('total');
    } else {
      const text = await readFile(path, 'utf8');
      mark('read');
      const { value } = parseYaml(text);
      mark('yaml');
      // validateConfig's two parts, in its order: the schema (zod), then the checks across fields.
      if (!schemaParse(value).success) throw new Error('invalid config');
      mark('zod');
      if (crossFieldProblems(value).length > 0) throw new Error('invalid config');
      mark('cross');
      await loadTemplatesAndProblems(undefined, path);
      mark('templates');
    }
    out.push(sample);
  }
  return out;
}
