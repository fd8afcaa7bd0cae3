/**
 * A config whose rule of rules.dir only the kernel refuses (TCPMSS on a UDP rule, refused at the table's commit),
 * given at the start: no config has applied yet, so every pass fails, retried with backoff from 0.5 s. The
 * supervisor says a failing pass once per 30 s (README, `run`: "repeated failures rate-limited to one line per
 * 30 s"), but the refusal itself was logged at error again by every retry: four lines in the first 4 s, six in
 * the first 10 s, for one broken template. And beside it, the failed pass's own line: two error lines for one refusal.
 */
import test from 'ava';
import { join } from 'node:path';
import { dump as stringify, load as parse } from 'js-yaml';
import { isRoot, NEEDS_ROOT } from '../helpers/lab.js';
import { bareNamespace, GatewayProcess, REPO, runner, waitFor } from '../helpers/supervisor.js';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';

const kernel = isRoot() ? test.serial : test.serial.skip;
const { namespace, bundle } = bareNamespace(test, 'k');
let dir: string | undefined;

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vgw-start-refused-'));
});

test.after.always('remove the config', async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

// Each given at a start, in a namespace the gateway has not touched: the nat payload writes our hook jumps too. The
// owner match is refused only where PREROUTING reaches it: with the jumps written after the rules, iptables-nft named
// our jump ("rule in chain PREROUTING"), and the start said nothing of the template. iptables-legacy names no rule at
// all (COMMIT): the start said nothing either, though the table it refused held the user's chain. Legacy last: its
// Docker chains, seeded in this namespace, make every later start choose it.
const REFUSED: ReadonlyArray<{ what: string; rulesDir: string; backend: 'nft' | 'legacy'; said: string }> = [
  { what: 'TCPMSS on a UDP rule', rulesDir: join(REPO, 'test', 'fixtures', 'kernel', 'rules-kernel-rejects'), backend: 'nft',
    said: `the kernel refuses a rule of rules.dir, ${join(REPO, 'test', 'fixtures', 'kernel', 'rules-kernel-rejects', 'nat', 'postrouting.hbs')} line 3 `
      + '(VGW-USER-POSTROUTING rule 1): -p udp --dport 9 -j TCPMSS --clamp-mss-to-pmtu' },
  { what: 'the owner match reached from PREROUTING', rulesDir: join(REPO, 'test', 'fixtures', 'broken-templates', 'kernel-rejects'), backend: 'nft',
    said: `the kernel refuses a rule of rules.dir, ${join(REPO, 'test', 'fixtures', 'broken-templates', 'kernel-rejects', 'nat', 'prerouting.hbs')} line 3 `
      + '(VGW-USER-PREROUTING rule 1): -m owner --uid-owner 0 -j ACCEPT' },
  { what: 'the owner match reached from PREROUTING, iptables-legacy', rulesDir: join(REPO, 'test', 'fixtures', 'broken-templates', 'kernel-rejects'), backend: 'legacy',
    said: 'the kernel refuses the nat table, for a rule of rules.dir (VGW-USER-PREROUTING) or one the gateway renders from the config' },
];

for (const { what, rulesDir, backend, said } of REFUSED) {
  kernel(`a rule the kernel refuses at the start (${what}) is said once, not at every retry of the failing pass${NEEDS_ROOT}`, async (t) => {
    if (backend === 'legacy') {
      await runner.run(['ip', 'netns', 'exec', namespace, 'iptables-legacy-restore', '--noflush'], { input: await readFile(join(REPO, 'test', 'fixtures', 'kernel', 'docker-dns.rules'), 'utf8') });
    }
    const example = parse(await readFile(join(REPO, 'examples', 'lab.yaml'), 'utf8')) as Record<string, unknown>;
    const config = join(dir!, 'gateway.yaml');
    await writeFile(config, stringify({ ...example, rules: { dir: rulesDir } }));
    const gateway = await GatewayProcess.start({ bundle: bundle().path, netns: namespace, config });
    // Four failed passes: the start's and three retries (0.5, 1 and 2 s later).
    await waitFor('four failed passes', async () => {
      const text = await gateway.metricsText().catch(() => '');
      const failed = [...text.matchAll(/^vlan_gateway_reconciles_total\{[^}]*result="failure"[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
      return failed >= 4 ? failed : undefined;
    }, 20_000, 100);
    // One error line for one refusal, its retries held back (once per 30 s): the failed pass's own line ("reconcile
    // failed; previous rules left in place", with the retry) said it a second time, beside it.
    const errors = gateway.logs.filter((l) => l.level >= 50);
    t.is(errors.length, 1, gateway.describeLogs());
    t.true(errors[0]!.msg.startsWith(said), errors[0]!.msg);
    t.regex(errors[0]!.msg, /no config has applied yet: the pass is retried with backoff, at most 30 s apart, until the template is fixed$/);
    t.like(errors[0], { trigger: 'start', failures: 1, retryInMs: 500 });
    t.regex(JSON.stringify(errors[0]!.err), new RegExp(`iptables-${backend}-restore failed`), 'the backend tried');
    t.is((await gateway.status()).reload.lastResult, 'failure', 'still shown in /status');
    t.is((await gateway.stop()).code, 0);
  });
}
