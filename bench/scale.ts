/**
 * How the gateway's cost grows with the number of VLANs (the reason for the config's limit, MAX_VLANS). Each
 * ordered pair of VLANs has its own accounting member (and, without ipset, its own rule), so the state grows with
 * the square of the count. For each count: a namespace with that many VLAN NICs and an uplink, the default policy
 * (accept, no rules), then a full apply and a no-op `vlan-gateway apply`'s pass (it reads every set member), both
 * through the `--netns` runner, one round each (seconds, not milliseconds: the ratios between counts are the figure).
 * More than MAX_VLANS is refused by validation (generateConfig throws). First, the time to validate a config at the
 * limit with 10,000 rules naming addresses.
 *
 *   sudo npx tsx bench/scale.ts [COUNT …]      (default: 64 128 256 512; 0: the validation alone)
 */
import { parseConfigText } from '../src/config/load.js';
import { MAX_VLANS } from '../src/config/schema.js';
import { ExecaRunner } from '../src/exec/execa-runner.js';
import { inNamespace } from '../src/exec/runner.js';
import { reconcileOnce } from '../src/reconcile/once.js';
import { loadTemplates } from '../src/template/load.js';
import { generateConfig, nicBatch, type ConfigShape } from './configs.js';
import { Namespaces } from './netns.js';

const counts = process.argv.length > 2 ? process.argv.slice(2).map(Number).filter((n) => n > 0) : [64, 128, 256, 512];
const runner = new ExecaRunner();
const namespaces = new Namespaces(runner);
const stop = () => void namespaces.cleanup().finally(() => process.exit(130));
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
try {
  // Validation alone, at the limit: rules naming addresses are matched to their VLANs (once 2.1 s, matched
  // against every VLAN several times over).
  const vlanLines = Array.from({ length: MAX_VLANS }, (_, i) => `  - {name: v${i}, id: ${i + 1}, subnet: 10.${i >> 8}.${i % 256}.0/24, gateway: 10.${i >> 8}.${i % 256}.1}`);
  const ruleLines = Array.from({ length: 10_000 }, (_, i) => `    - {from: 10.1.${i % 256}.5, to: 10.0.${i % 256}.0/25, action: drop}`);
  const yaml = `vlans:\n${vlanLines.join('\n')}\nforwarding:\n  rules:\n${ruleLines.join('\n')}\n`;
  const times = [0, 1, 2].map(() => {
    const start = performance.now();
    parseConfigText(yaml, 'scale.yaml');
    return performance.now() - start;
  });
  console.log(`validate ${MAX_VLANS} VLANs and 10,000 rules by address (${(yaml.length / 1e6).toFixed(1)} MB of YAML): `
    + `${times.map((ms) => ms.toFixed(0)).join(' / ')} ms (three runs)`);

  const templates = await loadTemplates();
  for (const vlans of counts) {
    const shape: ConfigShape = { vlans, partners: 0, rulesPerPair: 0, uplink: true };
    const config = generateConfig(shape);
    const ns = await namespaces.create(`scale${vlans}-`);
    await namespaces.batch(ns, nicBatch(shape));
    const inside = inNamespace(runner, ns);
    let start = performance.now();
    const { plan } = await reconcileOnce(inside, structuredClone(config), templates);
    const full = performance.now() - start;
    start = performance.now();
    const again = await reconcileOnce(inside, structuredClone(config), templates);
    const noop = performance.now() - start;
    if (again.plan.steps.length > 0) throw new Error(`${vlans} VLANs: the second apply changed ${again.plan.steps.length} things`);
    const rules = plan.desired.chains.reduce((n, c) => n + c.rules.length, 0);
    const members = plan.desired.sets.reduce((n, s) => n + s.members.length, 0);
    const headers = (await inside.run(['ipset', 'list', '-t'])).stdout;
    const kernelBytes = [...headers.matchAll(/^Size in memory: (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
    console.log(`${String(vlans).padStart(4)} VLANs: ${rules} rules, ${members} set members `
      + `(${(kernelBytes / 1e6).toFixed(1)} MB in the kernel); full apply ${(full / 1000).toFixed(1)} s, no-op ${(noop / 1000).toFixed(1)} s`);
    await namespaces.remove(ns);
  }
} finally {
  await namespaces.cleanup();
}
