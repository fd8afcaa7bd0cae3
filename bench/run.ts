/**
 * `sudo npm run bench`: apply cost (1k and 10k rule lines), forwarding cost, and start-up, side by side in one
 * run, inside throwaway `vgwbench-` namespaces that are always deleted (also on SIGINT / SIGTERM). Tables go to
 * stdout, progress to stderr. Exits 0 when every measurement ran, even if a target is MISSED; 1 on an error.
 *
 * Flags (for working on one part): --no-apply, --no-forwarding, --no-supervisor, --no-startup, --no-profile, --only-1k,
 * --no-container-start, --only-container-start (the supervisor's container-like starts alone).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExecaRunner } from '../src/exec/execa-runner.js';
import { loadTemplates } from '../src/template/load.js';
import { applyBench, type ApplyOptions, type ApplyResult } from './apply-bench.js';
import { containerStartBench } from './container-start.js';
import { forwardingBench } from './forwarding-bench.js';
import { SIZES as SHAPES } from './configs.js';
import { Namespaces } from './netns.js';
import { profilePlan } from './profile.js';
import {
  applyTable, containerStartTable, forwardingTable, profileTable, ratioTable, startupTable, supervisorTable, verdicts, verdictTable,
} from './report.js';
import { startupBench } from './startup.js';
import { supervisorBench, type SupervisorResult } from './supervisor-bench.js';

const SIZES: readonly ApplyOptions[] = [
  { label: '1k', shape: SHAPES['1k'], perRule: true, oneVlanChange: true },
  { label: '10k', shape: SHAPES['10k'], perRule: false, oneVlanChange: true },
];
const FORWARDING_SHAPE = { vlans: 100, partners: 1, rulesPerPair: 5, uplink: false };

const flag = (name: string) => process.argv.includes(`--${name}`);
const print = (text = '') => process.stdout.write(`${text}\n`);
const log = (text: string) => process.stderr.write(`${text}\n`);

async function machine(runner: ExecaRunner): Promise<string> {
  const out = async (argv: string[]) => (await runner.run(argv, { allowFailure: true })).stdout.trim();
  const mem = (await out(['free', '-h'])).split('\n').find((l) => l.startsWith('Mem:'))?.split(/\s+/)[1] ?? '?';
  return [
    `date: ${new Date().toISOString()}`,
    `cpus (nproc): ${await out(['nproc'])}, memory (free -h): ${mem}, kernel: ${await out(['uname', '-r'])}`,
    `${await out(['iptables', '-V'])}, ${(await out(['iperf3', '--version'])).split('\n')[0]}, node ${process.version}`,
  ].join('\n');
}

/**
 * Runs a part as the product is (ipset accounting on). When that fails because of ipset, says so loudly and
 * measures the part again with the ipset tool hidden (the product's "accounting off" mode), so the other
 * figures still come out; the tables then say "ipset accounting OFF".
 */
async function withIpsetFallback<T>(what: string, part: (ipset: boolean) => Promise<T>): Promise<T> {
  // --accounting-off: measure the product as it runs where ipset is missing (what the full apply costs without
  // the accounting sets to write).
  if (flag('accounting-off')) return part(false);
  try {
    return await part(true);
  } catch (error) {
    const message = String((error as Error)?.message ?? error);
    if (!/ipset/i.test(message)) throw error;
    print(`FAILED: ${what} with ipset accounting on: ${message.split('\n').slice(0, 2).join(' ')}`);
    print(`        measuring ${what} again with the ipset tool hidden (the product then runs with accounting off)`);
    print();
    log(`bench: ${what}: retrying without ipset`);
    return part(false);
  }
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    log('bench: needs root to create network namespaces (sudo npm run bench)');
    return 1;
  }
  const runner = new ExecaRunner();
  const namespaces = new Namespaces(runner);
  // What the gateways it starts keep (the clears left to do; the plan cache of a `validate`, where a part names none
  // of its own) goes to a scratch directory, not the machine's /run/vlan-gateway, which the benchmark left behind.
  const scratch = await mkdtemp(join(tmpdir(), 'vgwbench-run-'));
  process.env.VLAN_GATEWAY_STATE_DIR = join(scratch, 'state');
  process.env.VLAN_GATEWAY_PLAN_CACHE ??= join(scratch, 'plan-cache');
  const removeScratch = () => rm(scratch, { recursive: true, force: true });
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log(`bench: ${signal}, deleting namespaces ${namespaces.names.join(' ') || '(none)'}`);
    void namespaces.cleanup().then(removeScratch).finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const started = performance.now();
  try {
    print(await machine(runner));
    print();
    const templates = await loadTemplates();

    const only = flag('only-container-start');
    const results: ApplyResult[] = [];
    if (!flag('no-apply') && !only) {
      for (const size of flag('only-1k') ? SIZES.slice(0, 1) : SIZES) {
        log(`bench: apply ${size.label}`);
        const r = await withIpsetFallback(`apply ${size.label}`, (ipset) => applyBench(runner, namespaces, templates, { ...size, ipset }, log));
        results.push(r);
        print(applyTable(r));
        print();
      }
      print(ratioTable(results));
      print();
      print(verdictTable(verdicts(results)));
      print();
      if (!flag('no-profile')) {
        for (const r of results) {
          log(`bench: in-process profile ${r.label}`);
          print(profileTable(r.label, await profilePlan(r.config, r.factsAfter, r.saveText, templates)));
          print();
        }
      }
    }

    if (!flag('no-forwarding') && !only) {
      log('bench: forwarding');
      print(forwardingTable(await withIpsetFallback('forwarding', (ipset) =>
        forwardingBench(runner, namespaces, templates, { shape: FORWARDING_SHAPE, rounds: 5, seconds: 3, ipset }, log))));
      print();
    }

    if (!flag('no-supervisor')) {
      let supervisor: SupervisorResult | undefined;
      if (!only) {
        log('bench: supervisor');
        supervisor = await supervisorBench(runner, namespaces, log);
        print(supervisorTable(supervisor));
        print();
      }
      if (!flag('no-container-start')) {
        log('bench: supervisor, container-like starts');
        print(containerStartTable(await containerStartBench(runner, namespaces, log), supervisor));
        print();
      }
    }

    if (!flag('no-startup') && !only) {
      log('bench: start-up');
      print(startupTable(await startupBench(runner)));
      print();
    }
    return 0;
  } catch (error) {
    log(`bench: failed: ${(error as Error)?.stack ?? String(error)}`);
    return 1;
  } finally {
    await namespaces.cleanup();
    await removeScratch();
    const left = await namespaces.leftovers();
    print(`namespaces left behind: ${left.length === 0 ? 'none' : left.join(' ')}`);
    print(`benchmark wall time: ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
}

process.exitCode = await main();
