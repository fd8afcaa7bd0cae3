/**
 * What the repo ships for monitoring, read as Prometheus and Grafana read it: deploy/prometheus.yml and the README's
 * scrape config, the alerting rules of deploy/alerts.yml (loaded by prometheus.yml, mounted by compose.yaml, listed in
 * the README), the Grafana provisioning and dashboard (its datasource, its variable, every panel's PromQL), and the
 * PromQL the README gives (example queries, what to alert on). Every expression names series and labels the gateway
 * registers (or Prometheus' own `up`), with label values it exports; rate() and increase() take counters only, no
 * counter is summed raw, and `by` names labels its series have. Bars of increase() count each event once. With
 * promtool on PATH (Debian's prometheus package; skipped without it), every expression parses, and the dashboard's
 * and README's answers are checked against series of two gateways, as an operator's Prometheus would compute them;
 * the alerts pass `promtool check rules`, and `promtool test rules` (test/fixtures/alerts-test.yml) shows each firing on
 * a gateway in trouble, with its summary and description, and silent on a healthy one and on a blip shorter than its `for`.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { dump, load } from 'js-yaml';
import { Metrics } from '../../src/metrics/metrics.js';
import { WARNING_KINDS } from '../../src/plan/types.js';

const read = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');
const README = read('README.md');

interface Target { expr: string; refId: string; datasource?: { type: string; uid: string }; range?: boolean; instant?: boolean }
interface Panel {
  id: number; type: string; title: string; interval?: string; datasource?: { type: string; uid: string };
  gridPos: { h: number; w: number; x: number; y: number }; targets?: Target[];
  fieldConfig?: { defaults?: { custom?: { drawStyle?: string } } };
}
interface Variable { name: string; type: string; query: string | { query: string }; current?: { value: string | string[] }; datasource?: { uid: string } }
const dashboard = JSON.parse(read('deploy/grafana/dashboards/vlan-gateway.json')) as { uid: string; panels: Panel[]; templating: { list: Variable[] } };
const datasources = (load(read('deploy/grafana/provisioning/datasources/prometheus.yml')) as { datasources: Array<{ uid: string; type: string; jsonData?: { timeInterval?: string } }> }).datasources;
const prometheusYml = load(read('deploy/prometheus.yml')) as { rule_files?: string[]; scrape_configs: Array<{ job_name: string; scrape_interval?: string; metrics_path?: string; static_configs: Array<{ targets: string[] }> }> };
interface AlertRule { alert: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }
const ALERTS_FILE = 'deploy/alerts.yml';
const alertRules = (load(read(ALERTS_FILE)) as { groups: Array<{ name: string; rules: AlertRule[] }> }).groups.flatMap((g) => g.rules);
const ALERTS_TEST = 'test/fixtures/alerts-test.yml';
interface AlertTest { alertname: string; eval_time: string; exp_alerts?: Array<{ exp_labels: Record<string, string> }> }
const alertTests = load(read(ALERTS_TEST)) as { rule_files: string[]; tests: Array<{ name: string; input_series: Array<{ series: string }>; alert_rule_test: AlertTest[] }> };

/** The series the gateway registers: name → type and labels; a histogram's _bucket, _sum and _count are counters. */
type Kind = 'counter' | 'gauge';
const series = new Map<string, { kind: Kind; labels: string[] }>();
const metrics = new Metrics('0.0.0');
for (const m of metrics.registry.getMetricsAsArray()) {
  const { name, labelNames = [] } = m as unknown as { name: string; labelNames?: string[] };
  const type = String((m as unknown as { type: string }).type);
  if (type === 'histogram') {
    series.set(`${name}_bucket`, { kind: 'counter', labels: [...labelNames, 'le'] });
    series.set(`${name}_sum`, { kind: 'counter', labels: labelNames });
    series.set(`${name}_count`, { kind: 'counter', labels: labelNames });
  } else {
    series.set(name, { kind: type === 'counter' ? 'counter' : 'gauge', labels: labelNames });
  }
}
series.set('up', { kind: 'gauge', labels: [] });
/** The labels Prometheus adds to every series of a target. */
const TARGET_LABELS = ['job', 'instance'];
/** Label values the gateway exports, where they are a fixed list (the others are VLAN names, NICs, MACs, versions). */
const VALUES: Record<string, readonly string[]> = {
  result: ['success', 'failure'],
  action: ['accept', 'drop', 'reject'],
  trigger: ['start', 'schedule', 'drift', 'netlink', 'reload'],
  table: ['filter', 'nat'],
  reason: ['invalid', 'spoofed', 'unmanaged', 'waiting', 'hairpin'],
  job: ['vlan-gateway'],
};
const KIND_VALUES: Record<string, readonly string[]> = {
  vlan_gateway_drift_repairs_total: ['rules', 'jump', 'address', 'link', 'route', 'sysctl', 'set'],
  vlan_gateway_nat_packets_total: ['masquerade', 'snat', 'dnat'],
  vlan_gateway_nat_bytes_total: ['masquerade', 'snat', 'dnat'],
  vlan_gateway_warnings: WARNING_KINDS,
};

/** Each PromQL expression shipped, and where. */
interface Shipped { where: string; expr: string; panel?: Panel }
const shipped: Shipped[] = [];
for (const panel of dashboard.panels) {
  for (const target of panel.targets ?? []) shipped.push({ where: `dashboard panel "${panel.title}" (${target.refId})`, expr: target.expr, panel });
}
// README: PromQL in backticks, a function of a series (`sum by (…) (rate(vlan_gateway_…[5m]))`), or what to alert on.
for (const m of README.matchAll(/`([^`\n]+)`/g)) {
  const text = m[1]!;
  if (/\b(?:vlan_gateway_\w+|process_start_time_seconds|up)\b/.test(text) && (/\w\(.*\)/.test(text) || /\s(?:==|>|<|!=)\s/.test(text))) {
    shipped.push({ where: `README "${text}"`, expr: text });
  }
}

for (const rule of alertRules) shipped.push({ where: `${ALERTS_FILE} alert ${rule.alert}`, expr: rule.expr });

const BUILTINS = ['__rate_interval', '__interval', '__range'];
/** As Grafana sends it: the dashboard's variables and the built-in intervals (5 s scrapes, 5 s steps, one hour shown). */
const grafana = (expr: string) => expr.replaceAll('$__rate_interval', '20s').replaceAll('$__interval', '5s').replaceAll('$__range', '1h').replaceAll('$instance', '.*');

/** A small reading of PromQL: the series selectors, each with the function around it, and the `by` clauses. */
interface Selector { name: string; matchers: Array<{ label: string; op: string; value: string }>; inside: string | undefined }
const AGGREGATIONS = new Set(['sum', 'min', 'max', 'avg', 'count', 'group', 'stddev', 'stdvar', 'topk', 'bottomk', 'quantile', 'count_values']);
const KEYWORDS = new Set(['and', 'or', 'unless', 'offset', 'bool', 'inf', 'nan']);
function readPromQL(expr: string): { selectors: Selector[]; groupings: Array<{ labels: string[]; over: string[] }> } {
  const selectors: Selector[] = [];
  const groupings: Array<{ labels: string[]; over: string[] }> = [];
  // The open parentheses: the function each belongs to, and the series named inside it.
  const stack: Array<{ fn: string | undefined; seen: string[] }> = [];
  let pendingFn: string | undefined;
  let pendingGrouping: { labels: string[]; over: string[] } | undefined;
  let lastClosed: string[] = [];
  let i = 0;
  while (i < expr.length) {
    const c = expr[i]!;
    if (c === '"' || c === '\'') {
      i = expr.indexOf(c, i + 1) + 1;
      continue;
    }
    const word = /^[a-zA-Z_:][\w:]*/.exec(expr.slice(i));
    if (word && !/[\w.]/.test(expr[i - 1] ?? '')) {
      const name = word[0];
      i += name.length;
      const rest = expr.slice(i);
      if (['by', 'without', 'on', 'ignoring', 'group_left', 'group_right'].includes(name)) {
        const list = /^\s*\(([^)]*)\)/.exec(rest);
        if (!list) continue;
        i += list[0].length;
        if (name !== 'by') continue;
        const grouping = { labels: list[1]!.split(',').map((l) => l.trim()).filter(Boolean), over: [] as string[] };
        groupings.push(grouping);
        // `sum by (x) (…)`: over what its parentheses will hold; `sum (…) by (x)`: over what they held.
        if (pendingFn) pendingGrouping = grouping;
        else grouping.over = lastClosed;
        continue;
      }
      if (KEYWORDS.has(name.toLowerCase())) continue;
      if (/^\s*\(/.test(rest) || (AGGREGATIONS.has(name) && /^\s*(by|without)\b/.test(rest))) {
        pendingFn = name;
        continue;
      }
      const matchers: Selector['matchers'] = [];
      const braces = /^\{([^}]*)\}/.exec(rest);
      if (braces) {
        for (const m of braces[1]!.matchAll(/(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"/g)) matchers.push({ label: m[1]!, op: m[2]!, value: m[3]! });
        i += braces[0].length;
      }
      selectors.push({ name, matchers, inside: [...stack].reverse().find((f) => f.fn !== undefined)?.fn });
      for (const frame of stack) frame.seen.push(name);
      continue;
    }
    if (c === '(') {
      const frame = { fn: pendingFn, seen: pendingGrouping?.over ?? [] };
      stack.push(frame);
      pendingFn = undefined;
      pendingGrouping = undefined;
    } else if (c === ')') {
      lastClosed = stack.pop()?.seen ?? [];
    } else if (c === '[') {
      i = expr.indexOf(']', i);
    }
    i++;
  }
  return { selectors, groupings };
}

test('there are expressions to check: every panel\'s queries, and the README\'s example queries and alerts', (t) => {
  const panels = dashboard.panels.filter((p) => p.type !== 'row');
  t.true(panels.length >= 15);
  for (const panel of panels) t.true((panel.targets ?? []).length > 0, `panel "${panel.title}" has queries`);
  const fromReadme = shipped.filter((s) => s.where.startsWith('README'));
  t.true(fromReadme.some((s) => s.expr.startsWith('histogram_quantile(')), JSON.stringify(fromReadme.map((s) => s.expr)));
  t.true(fromReadme.some((s) => s.expr.includes('vlan_gateway_uplink_up == 0')));
  t.true(fromReadme.some((s) => s.expr.startsWith('changes(process_start_time_seconds')));
  t.true(fromReadme.some((s) => s.expr.startsWith('up{')), 'an alert for the gateway itself down');
  t.true(shipped.filter((s) => s.where.startsWith(ALERTS_FILE)).length >= 10, 'the alerting rules');
});

test('every shipped expression names series and labels the gateway exports, takes rate() of counters only, sums no counter raw', (t) => {
  const problems: string[] = [];
  const check = (ok: boolean, problem: string) => ok || problems.push(problem);
  for (const { where, expr } of shipped) {
    const { selectors, groupings } = readPromQL(grafana(expr));
    check(selectors.length > 0, `${where}: no series found in ${expr}`);
    for (const s of selectors) {
      const known = series.get(s.name);
      if (!check(known !== undefined, `${where}: ${s.name} is no series of the gateway's`) || !known) continue;
      for (const m of s.matchers) {
        check([...known.labels, ...TARGET_LABELS].includes(m.label), `${where}: ${s.name} has no label "${m.label}" (it has ${known.labels.join(', ') || 'none'})`);
        const values = m.label === 'kind' ? KIND_VALUES[s.name] : VALUES[m.label];
        if (values && (m.op === '=' || m.op === '!=')) check(values.includes(m.value), `${where}: ${s.name}{${m.label}} is never "${m.value}" (${values.join(', ')})`);
      }
      const overTime = ['rate', 'irate', 'increase'].includes(s.inside ?? '');
      if (known.kind === 'gauge') check(!overTime, `${where}: ${s.inside}() of ${s.name}, a gauge`);
      else check(overTime || s.inside === 'resets', `${where}: ${s.name}, a counter, is used without rate() or increase() (inside ${s.inside ?? 'nothing'})`);
    }
    for (const g of groupings) {
      for (const label of g.labels) {
        for (const name of g.over) {
          const known = series.get(name);
          if (known) check([...known.labels, ...TARGET_LABELS].includes(label), `${where}: by (${label}) over ${name}, which has no such label`);
        }
      }
    }
  }
  t.deepEqual(problems, []);
});

test('the dashboard\'s datasource is the provisioned Prometheus, its variables are defined and find the gateways', (t) => {
  const [provisioned] = datasources;
  t.is(provisioned?.type, 'prometheus');
  const variables = new Map(dashboard.templating.list.map((v) => [v.name, v]));
  const ds = variables.get('datasource');
  t.is(ds?.type, 'datasource');
  t.is(ds?.query, 'prometheus');
  t.is(ds?.current?.value, provisioned!.uid, 'the datasource variable starts on the provisioned datasource');
  const instance = variables.get('instance')!;
  t.is(instance.datasource?.uid, '${datasource}');
  const query = typeof instance.query === 'string' ? instance.query : instance.query.query;
  const lv = /^label_values\((\w+), *(\w+)\)$/.exec(query);
  t.truthy(lv, query);
  t.true(series.has(lv![1]!) && TARGET_LABELS.includes(lv![2]!), query);

  const ids = new Set<number>();
  for (const panel of dashboard.panels) {
    t.false(ids.has(panel.id), `panel id ${panel.id} is unique`);
    ids.add(panel.id);
    t.true(panel.gridPos.x + panel.gridPos.w <= 24, `panel "${panel.title}" fits in 24 columns`);
    if (panel.type === 'row') continue;
    t.deepEqual(panel.datasource, { type: 'prometheus', uid: '${datasource}' }, `panel "${panel.title}"`);
    const refIds = new Set<string>();
    for (const target of panel.targets ?? []) {
      t.false(refIds.has(target.refId), `panel "${panel.title}": refId ${target.refId} is unique`);
      refIds.add(target.refId);
      t.deepEqual(target.datasource, panel.datasource, `panel "${panel.title}" ${target.refId}`);
      for (const m of target.expr.matchAll(/\$\{?(\w+)/g)) t.true(variables.has(m[1]!) || BUILTINS.includes(m[1]!), `panel "${panel.title}": $${m[1]} is no variable`);
    }
  }
  // Panels do not overlap.
  const cells = new Map<string, string>();
  for (const panel of dashboard.panels) {
    const { x, y, w, h } = panel.gridPos;
    for (let r = y; r < y + h; r++) {
      for (let c = x; c < x + w; c++) {
        const other = cells.get(`${r},${c}`);
        t.is(other, undefined, `panels "${other}" and "${panel.title}" overlap`);
        cells.set(`${r},${c}`, panel.title);
      }
    }
  }
});

const seconds = (duration: string) => {
  const m = /^(\d+)(ms|s|m|h)$/.exec(duration);
  if (!m) throw new Error(`not a duration: ${duration}`);
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] as 'ms' | 's' | 'm' | 'h'];
};

// Grafana's $__rate_interval is max($__interval + scrape interval, 4 × scrape interval). A bar of
// increase(…[$__rate_interval]) every $__interval counts what happened in the last $__rate_interval: with 5 s bars
// over 20 s, each drift repair, reload or failed pass stood in four bars, and a single one read as 3 to 4.
test('a bar chart of increase() counts each event in one bar: its interval is at least 3 scrape intervals', (t) => {
  const scrape = seconds(datasources[0]!.jsonData!.timeInterval!);
  const job = prometheusYml.scrape_configs.find((c) => c.job_name === 'vlan-gateway')!;
  t.is(seconds(job.scrape_interval!), scrape, 'the datasource\'s timeInterval is the scrape interval');
  let bars = 0;
  for (const panel of dashboard.panels) {
    if (panel.fieldConfig?.defaults?.custom?.drawStyle !== 'bars') continue;
    for (const target of panel.targets ?? []) {
      if (!/increase\([^)]*\[\$__rate_interval\]\)/.test(target.expr)) continue;
      bars++;
      const interval = panel.interval ? seconds(panel.interval) : scrape;
      t.true(interval >= 3 * scrape, `panel "${panel.title}": bars every ${interval} s of increase() over ${Math.max(interval + scrape, 4 * scrape)} s count each event ${Math.ceil(Math.max(interval + scrape, 4 * scrape) / interval)} times; give it an interval of at least ${3 * scrape}s`);
    }
  }
  t.true(bars >= 4, 'drift repairs, reconciles, iptables-restore runs, reloads');
});

test('the scrape configs shipped scrape job vlan-gateway at port 10123, /metrics, as the dashboard expects', (t) => {
  const job = prometheusYml.scrape_configs.find((c) => c.job_name === 'vlan-gateway');
  t.truthy(job);
  t.is(job!.metrics_path ?? '/metrics', '/metrics');
  t.deepEqual(job!.static_configs.flatMap((c) => c.targets), ['vlan-gateway:10123']);
  const block = /```yaml\n(scrape_configs:[\s\S]*?)```/.exec(README);
  t.truthy(block, 'the README shows a scrape config');
  const readme = load(block![1]!) as typeof prometheusYml;
  t.deepEqual(readme.scrape_configs.map((c) => [c.job_name, c.static_configs.flatMap((s) => s.targets)]), [['vlan-gateway', ['vlan-gateway:10123']]]);
});

/** The labels the series of an expression carry (and Prometheus' own job and instance). */
const labelsOf = (expr: string) => new Set([...TARGET_LABELS, ...readPromQL(expr).selectors.flatMap((s) => series.get(s.name)?.labels ?? [])]);

test('each alert has a severity, a for, and a summary and description naming the instance and every label of its series (VLAN, NIC, MAC, kind)', (t) => {
  t.deepEqual(alertRules.map((r) => r.alert), [
    'VlanGatewayDown', 'VlanGatewayRestarting', 'VlanGatewayUplinkDown', 'VlanGatewayVlanNotRouted', 'VlanGatewayLinkFlapping', 'VlanGatewayAddressConflict',
    'VlanGatewayReconcileStalled', 'VlanGatewayConfigReloadRejected', 'VlanGatewayDriftFought', 'VlanGatewayConntrackNearLimit',
    'VlanGatewayStatsReadFailing', 'VlanGatewayWarning',
  ]);
  for (const rule of alertRules) {
    const where = `${ALERTS_FILE} alert ${rule.alert}`;
    t.true(['critical', 'warning'].includes(rule.labels?.severity ?? ''), `${where}: severity ${rule.labels?.severity}`);
    t.true(rule.for !== undefined && seconds(rule.for) >= 60, `${where}: for ${rule.for}: a blip of a scrape or two pages nobody`);
    t.deepEqual(Object.keys(rule.annotations ?? {}).sort(), ['description', 'summary'], where);
    const text = `${rule.annotations!.summary}\n${rule.annotations!.description}`;
    const has = labelsOf(rule.expr);
    for (const m of text.matchAll(/\$labels\.(\w+)/g)) t.true(has.has(m[1]!), `${where}: $labels.${m[1]} is no label of ${rule.expr} (${[...has].join(', ')})`);
    for (const label of has) {
      if (label === 'job') continue;
      t.true(text.includes(`$labels.${label}`), `${where}: its annotations do not say the ${label}`);
    }
    t.regex(rule.annotations!.summary!, /\{\{ \$labels\.instance \}\}/, `${where}: the summary names the gateway`);
  }
});

test('deploy/prometheus.yml loads the alerts, and compose.yaml mounts them where it looks', (t) => {
  t.deepEqual(prometheusYml.rule_files, ['alerts.yml']);
  const compose = load(read('compose.yaml')) as { services: Record<string, { command?: string[]; volumes?: string[] }> };
  const prometheus = compose.services.prometheus!;
  const configFile = prometheus.command!.find((a) => a.startsWith('--config.file='))!.slice('--config.file='.length);
  t.true(prometheus.volumes!.includes(`./deploy/prometheus.yml:${configFile}:ro`));
  // Prometheus reads a relative rule file from its config file's directory.
  const configDir = configFile.slice(0, configFile.lastIndexOf('/'));
  for (const file of prometheusYml.rule_files!) t.true(prometheus.volumes!.includes(`./deploy/${file}:${configDir}/${file}:ro`), `compose mounts deploy/${file} at ${configDir}/${file}: ${prometheus.volumes!.join(', ')}`);
});

// At an address of the host's other than loopback, a VLAN host's request reaches the endpoints through the gateway
// and the host's Docker (its proxy, or its hairpin NAT), which hands it in from the uplink side: past http.allowFrom,
// a 200 for /status where the gateway's own addresses answer 403 (seen on the quick start's network).
test('the gateway\'s HTTP port (and Compose\'s Prometheus and Grafana) are published on the host\'s loopback alone, by compose.yaml\'s defaults and the README\'s docker run', (t) => {
  const withDefaults = (text: string) => text.replace(/\$\{(\w+):-([^}]*)\}/g, (_match, _name: string, value: string) => value);
  const compose = load(read('compose.yaml')) as { services: Record<string, { ports?: string[] }> };
  t.deepEqual(compose.services['vlan-gateway']!.ports!.map(withDefaults), ['127.0.0.1:10123:10123']);
  t.regex(compose.services['vlan-gateway']!.ports![0]!, /^\$\{VLAN_GATEWAY_METRICS_ADDRESS:-127\.0\.0\.1\}:/, 'the address is a variable the README names');
  t.true(README.includes('`VLAN_GATEWAY_METRICS_ADDRESS` (`127.0.0.1`'), 'the README lists the variable with its default');
  // Prometheus and Grafana (admin/admin unless set) are reached the same way: on the loopback too, by default.
  t.deepEqual(compose.services.prometheus!.ports!.map(withDefaults), ['127.0.0.1:9090:9090']);
  t.deepEqual(compose.services.grafana!.ports!.map(withDefaults), ['127.0.0.1:3000:3000']);
  for (const name of ['PROMETHEUS_ADDRESS', 'GRAFANA_ADDRESS']) t.true(README.includes(`\`${name}\` (\`127.0.0.1\`)`), `the README lists ${name} with its default`);
  // The quick start's `docker run` of the gateway, its continuation lines joined.
  const run = /^docker run -d --name vlan-gateway (?:.*\\\n)*.*$/m.exec(README)?.[0] ?? '';
  t.true(run.includes('--network a-uplink'), run);
  const published = [...run.matchAll(/(?:^|\s)(?:-p|--publish)[ =](\S+)/g)].map((m) => m[1]);
  t.deepEqual(published, ['127.0.0.1:10123:10123']);
});

// Where node:22-alpine or alpine:3.22 cannot be pulled, the README's step 0 names others with --build-arg; Compose's
// build took no arguments, so `docker compose build` could only fail there.
test('compose.yaml builds the gateway with the Dockerfile\'s base images by default, and BUILD_IMAGE / BASE_IMAGE name others', (t) => {
  const compose = load(read('compose.yaml')) as { services: Record<string, { build?: { args?: Record<string, string> } }> };
  const args = compose.services['vlan-gateway']!.build!.args!;
  const dockerfile = read('image/Dockerfile');
  for (const name of ['BUILD_IMAGE', 'BASE_IMAGE']) {
    const fallback = new RegExp(`^ARG ${name}=(\\S+)$`, 'm').exec(dockerfile)?.[1];
    t.truthy(fallback, `the Dockerfile has ARG ${name}=…`);
    t.is(args[name], `\${${name}:-${fallback!}}`);
    t.true(README.replace(/\s+/g, ' ').includes(`\`${name}\` (\`${fallback!}\``), `the README lists ${name} with its default`);
  }
});

test('the README\'s table of alerts lists each alert of deploy/alerts.yml with its severity, and no other', (t) => {
  const rows = [...README.matchAll(/^\| `(VlanGateway\w+)` \| (\w+) \|/gm)].map((m) => [m[1], m[2]]);
  t.deepEqual(rows, alertRules.map((r) => [r.alert, r.labels!.severity]));
});

test('the promtool tests of the alerts show each firing on a gateway in trouble and silent on the healthy b:10123', (t) => {
  t.deepEqual(alertTests.rule_files, ['../../deploy/alerts.yml'], 'the shipped rules, from test/fixtures');
  for (const rule of alertRules) {
    const cases = alertTests.tests.filter((g) => g.alert_rule_test.some((c) => c.alertname === rule.alert));
    const evals = cases.flatMap((g) => g.alert_rule_test).filter((c) => c.alertname === rule.alert);
    t.true(evals.some((c) => (c.exp_alerts ?? []).length > 0), `${rule.alert} fires in a test`);
    t.true(evals.some((c) => (c.exp_alerts ?? []).length === 0), `${rule.alert} is silent in a test (before its for, or after)`);
    const inputs = cases.flatMap((g) => g.input_series.map((s) => s.series));
    t.true(inputs.some((s) => s.includes('instance="b:10123"')), `${rule.alert}'s test has a healthy gateway b:10123`);
    t.false(evals.some((c) => (c.exp_alerts ?? []).some((a) => a.exp_labels.instance === 'b:10123')), `${rule.alert} never fires for b:10123`);
  }
});

const promtool = spawnSync('promtool', ['--version']).status === 0;
const withPromtool = promtool ? test : test.skip;
const SKIP = promtool ? '' : ' (skipped: no promtool on PATH; scripts/install-deps.sh installs it)';

withPromtool(`promtool parses every shipped expression${SKIP}`, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-promql-'));
  try {
    const file = join(dir, 'rules.yml');
    const rules = shipped.map((s, n) => ({ record: `shipped:expr_${n}`, expr: grafana(s.expr) }));
    await writeFile(file, dump({ groups: [{ name: 'shipped', rules }] }));
    const result = await execa('promtool', ['check', 'rules', file], { reject: false, all: true });
    t.is(result.exitCode, 0, `${result.all}\n${shipped.map((s, n) => `expr_${n}: ${s.where}`).join('\n')}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** Two gateways as Prometheus stores them, scraped every 5 s for 10 minutes. */
const inputSeries = [
  // a: its last good pass was at 100 s (stuck since); b: one every 5 s; c: started at 300 s, and no pass of it has
  // succeeded yet (the gauge is 0 until one does: its age counts from its start, not from 1970).
  { series: 'vlan_gateway_last_successful_reconcile_timestamp_seconds{job="vlan-gateway",instance="a:10123"}', values: '100x120' },
  { series: 'vlan_gateway_last_successful_reconcile_timestamp_seconds{job="vlan-gateway",instance="b:10123"}', values: '0+5x120' },
  { series: 'vlan_gateway_last_successful_reconcile_timestamp_seconds{job="vlan-gateway",instance="c:10123"}', values: '0x120' },
  { series: 'process_start_time_seconds{job="vlan-gateway",instance="c:10123"}', values: '300x120' },
  // office → lab: 1000 bytes accepted every 5 s (1600 bit/s); the Internet's new connections to office, dropped:
  // 500 bytes every 5 s. Dropped traffic is not forwarded.
  { series: 'vlan_gateway_forwarded_bytes_total{job="vlan-gateway",instance="a:10123",from="office",to="lab",action="accept"}', values: '0+1000x120' },
  { series: 'vlan_gateway_forwarded_bytes_total{job="vlan-gateway",instance="a:10123",from="uplink",to="office",action="drop"}', values: '0+500x120' },
  { series: 'vlan_gateway_forwarded_bytes_total{job="vlan-gateway",instance="a:10123",from="uplink",to="office",action="accept"}', values: '0x120' },
];
const panelExpr = (title: string, refId = 'A') => {
  const panel = dashboard.panels.find((p) => p.title === title);
  if (!panel) throw new Error(`no panel "${title}"`);
  return grafana(panel.targets!.find((x) => x.refId === refId)!.expr);
};
const readmeExpr = (start: string) => shipped.find((s) => s.where.startsWith('README') && s.expr.startsWith(start))!.expr;

withPromtool(`the dashboard's and README's answers, for two gateways: the worst reconcile age, forwarded bytes without the dropped${SKIP}`, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-promql-'));
  try {
    const file = join(dir, 'test.yml');
    await writeFile(file, dump({
      rule_files: [],
      evaluation_interval: '5s',
      tests: [{
        interval: '5s',
        input_series: inputSeries,
        promql_expr_test: [
          // A stat over every gateway shows the one in trouble: 500 s since a's last good pass, not b's 0, nor 600 s
          // since 1970 for c, which has had none since its start 300 s ago.
          { expr: panelExpr('Since last good reconcile'), eval_time: '10m', exp_samples: [{ labels: '{}', value: 500 }] },
          { expr: panelExpr('Forwarded bytes by pair'), eval_time: '10m', exp_samples: [
            { labels: '{from="office",to="lab"}', value: 1600 },
            { labels: '{from="uplink",to="office"}', value: 0 },
          ] },
          { expr: readmeExpr('sum by (from, to) (rate(vlan_gateway_forwarded_bytes_total'), eval_time: '10m', exp_samples: [
            { labels: '{from="office",to="lab"}', value: 200 },
            { labels: '{from="uplink",to="office"}', value: 0 },
          ] },
        ],
      }],
    }));
    const result = await execa('promtool', ['test', 'rules', file], { reject: false, all: true });
    t.is(result.exitCode, 0, result.all);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

withPromtool(`promtool checks deploy/alerts.yml, and deploy/prometheus.yml with it${SKIP}`, async (t) => {
  const repo = new URL('../../', import.meta.url);
  const rules = await execa('promtool', ['check', 'rules', ALERTS_FILE], { cwd: repo, reject: false, all: true });
  t.is(rules.exitCode, 0, rules.all);
  t.regex(rules.all ?? '', new RegExp(`SUCCESS: ${alertRules.length} rules found`));
  const config = await execa('promtool', ['check', 'config', 'deploy/prometheus.yml'], { cwd: repo, reject: false, all: true });
  t.is(config.exitCode, 0, config.all);
  t.regex(config.all ?? '', /SUCCESS: 1 rule files found/);
});

withPromtool(`promtool test rules: each alert fires on a gateway in trouble, with its summary and description, and is silent on a healthy one${SKIP}`, async (t) => {
  const result = await execa('promtool', ['test', 'rules', ALERTS_TEST], { cwd: new URL('../../', import.meta.url), reject: false, all: true });
  t.is(result.exitCode, 0, result.all);
  t.regex(result.all ?? '', /SUCCESS/);
});
