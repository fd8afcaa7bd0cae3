/**
 * `vlan-gateway apply` and `plan` read the namespace while their config file loads (readWhileLoading): the reads are
 * processes, the load holds the main thread. Against the semantic fake: the reads are under way before the load
 * ends, the pass planned from them leaves what a pass that reads afterwards leaves, and a load that fails leaves
 * reads nobody awaits without an unhandled rejection (which fails an ava run).
 */
import test from 'ava';
import { readWhileLoading } from '../../src/cli/context.js';
import { parseConfigText } from '../../src/config/load.js';
import type { CommandRunner, RunResult } from '../../src/exec/runner.js';
import { CommandError } from '../../src/exec/runner.js';
import { reconcileOnce } from '../../src/reconcile/once.js';
import { loadTemplates } from '../../src/template/load.js';
import { labText, NICS, UPLINK } from '../helpers/converge-states.js';
import { FakeNetns } from '../fakes/netfilter.js';

const templates = await loadTemplates();
const lab = parseConfigText(labText, 'lab.yaml');

const dockerNamespace = () => new FakeNetns({
  links: [UPLINK, NICS.eth1!, NICS.eth2!],
  defaultRoute: { gateway: '203.0.113.1', dev: 'eth0' },
  dockerDns: true,
});

test('the reads start before the config file has loaded, and the pass planned from them is the pass that reads after it', async (t) => {
  const early = dockerNamespace();
  let loadEnds!: () => void;
  const loading = new Promise<void>((resolve) => (loadEnds = resolve));
  const pending = readWhileLoading(early, async () => {
    await loading;
    return lab;
  });
  await new Promise((resolve) => setImmediate(resolve));
  const startedDuringLoad = early.history.map((c) => c.split(' ')[0]);
  t.deepEqual([...new Set(startedDuringLoad)].sort(), ['cat', 'ip', 'ipset', 'iptables-nft-save'], 'the four reads, while the load still waits');
  loadEnds();
  const { loaded, reading } = await pending;
  const ahead = await reconcileOnce(early, loaded, templates, { reading });

  const after = dockerNamespace();
  const behind = await reconcileOnce(after, lab, templates);
  t.is(early.snapshot(), after.snapshot());
  t.deepEqual(ahead.plan.steps.map((s) => s.kind), behind.plan.steps.map((s) => s.kind));
  t.deepEqual((await reconcileOnce(early, lab, templates)).plan.steps, [], 'in sync after it');
});

test('a config file that fails to load: its error, and the reads left unread (failing too) are nobody\'s unhandled rejection', async (t) => {
  const failing: CommandRunner = {
    run: (argv): Promise<RunResult> => Promise.reject(new CommandError(argv, 1, 'not permitted')),
    start: () => {
      throw new Error('nothing is started by a read');
    },
  };
  await t.throwsAsync(readWhileLoading(failing, () => Promise.reject(new Error('vlans[0].gateway: bad'))), { message: 'vlans[0].gateway: bad' });
  // The reads' rejections come in after the load's: a turn of the loop for them to land (ava fails the run on one
  // that nobody handles).
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.pass();
});

test('reads started before a pass are for a pass without a backend or memory, whose reads take no options', async (t) => {
  const ns = dockerNamespace();
  const { loaded, reading } = await readWhileLoading(ns, () => Promise.resolve(lab));
  await t.throwsAsync(reconcileOnce(ns, loaded, templates, { reading, backend: 'nft' }), { message: /take no backend or memory/ });
  await reading.facts;
});
