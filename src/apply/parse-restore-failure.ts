/** What a failed restore or batch says: which line failed, and which rules the kernel refused (pure: no I/O). */
import { CommandError } from '../exec/runner.js';
import { fromTemplate, type ChainSource } from '../plan/check.js';

/** Which line of a batch failed, from the tool's message (0-based; the first line when it does not say). */
export function failedScriptLine(error: unknown, pattern: RegExp, lines: number): number {
  const m = pattern.exec(error instanceof CommandError ? error.stderr : '');
  const n = m ? Number(m[1]) - 1 : 0;
  return n >= 0 && n < lines ? n : 0;
}

/**
 * The kernel refused a table's payload when it was committed: what was written is what it will not take, and it
 * would refuse it again (a target outside the protocols or hooks it allows, a module this kernel lacks), whether the
 * rule is one of rules.dir or one the gateway renders. Not a restore that could not do its work: the xtables lock held
 * past the wait (exit 4, no line named), one killed (no exit code), memory or buffers short (iptables-nft says its
 * errno). iptables-nft names each refused line with its errno; iptables-legacy names only the COMMIT line, and no
 * errno, so runTable confirms it with a second try (see refusedAtCommit).
 */
export interface CommitRefusal {
  readonly table: string;
  /** The chains of rules.dir the payload wrote (created or rewritten): with no line named, the refused rule may be in one. */
  readonly userChains: readonly string[];
}

/** The errnos with which the kernel refuses a rule for what it is (nft's words; "Too many links": the fake's loop). */
const REFUSAL_REASON = /^(Invalid argument|No such file or directory|Operation not supported|Protocol not supported|Numerical result out of range|Too many levels of symbolic links|Too many links)\b/;

/**
 * Did the kernel refuse `payload` at its commit (CommitRefusal), as the restore's `error` says? iptables-nft: every
 * line it names refused with an errno of REFUSAL_REASON ("line 4: RULE_APPEND failed (Invalid argument)"), not one
 * of want (Cannot allocate memory, No buffer space available, Device or resource busy). iptables-legacy: "line N
 * failed", N the COMMIT line (a rule line's failure is iptables' parser's, which `--test` meets first).
 */
export function refusedAtCommit(payload: string, error: unknown): boolean {
  if (!(error instanceof CommandError) || error.exitCode === null) return false;
  const reasons = [...error.stderr.matchAll(NFT_REFUSED_LINE)].map((m) => m[2]!);
  if (reasons.length > 0) return reasons.every((r) => REFUSAL_REASON.test(r));
  const commit = /^\S+: line (\d+) failed(?:: (.*))?$/m.exec(error.stderr);
  return commit !== null && payload.split('\n')[Number(commit[1]) - 1] === 'COMMIT' && (commit[2] === undefined || REFUSAL_REASON.test(commit[2]));
}

/** A rule of rules.dir the kernel refused when its table was committed. */
export interface RefusedRule {
  readonly table: string;
  readonly chain: string;
  /** Its 1-based number in the chain (the chain is written whole). */
  readonly rule: number;
  /** The rule as the template rendered it (without the gateway's hash comment). */
  readonly text: string;
  /** The kernel's errno, in words ("Invalid argument"). */
  readonly reason: string;
}

/** "line 14: RULE_APPEND failed (Invalid argument): rule in chain VGW-USER-FORWARD": iptables-nft, one a refused line. */
const NFT_REFUSED_LINE = /^line (\d+): \w+ failed \(([^)]*)\)/gm;

/**
 * The rules of rules.dir a restore of `payload` was refused for. The kernel judges a whole nf_tables batch and
 * reports each message it refuses; iptables-nft names each one's line (up to about 1 KiB of message: `cut` says
 * when it stopped short). iptables-legacy hands the kernel the table whole and names only COMMIT: none.
 */
export function refusedUserRules(table: string, payload: string, stderr: string): { rules: RefusedRule[]; cut: boolean } {
  const lines = payload.split('\n');
  const rules: RefusedRule[] = [];
  for (const [, n, reason] of stderr.matchAll(NFT_REFUSED_LINE)) {
    const line = lines[Number(n) - 1];
    const chain = line === undefined ? undefined : /^-A (VGW-USER-[A-Z]+) /.exec(line)?.[1];
    if (chain === undefined) continue;
    const rule = lines.slice(0, Number(n)).filter((l) => l.startsWith(`-A ${chain} `)).length;
    const text = line!.slice(`-A ${chain} `.length).replace(/^-m comment --comment vgw:\S+ /, '');
    rules.push({ table, chain, rule, text, reason: reason! });
  }
  // What iptables said ends inside a line: its message was cut there, and lines after it may be refused too.
  const last = stderr.trimEnd().split('\n').at(-1) ?? '';
  return { rules, cut: /^line\b/.test(last) && !/^line \d+: \w+ failed \([^)]*\)/.test(last) };
}

/** The most refused rules an apply's error lists (as apply/user-rules-check.ts's REFUSALS_SAID). */
const REFUSED_SAID = 10;

/**
 * The refused rules of rules.dir, each named by table, chain, number and template, for the end of an apply's error:
 * all of them, of every table refused, in one run (iptables' own message names the first table's, by payload line).
 */
export function refusedRulesText(refused: readonly RefusedRule[], cut: boolean,
  templateOf: (chain: string) => ChainSource | undefined = () => undefined): string {
  if (refused.length === 0) return '';
  const said = refused.slice(0, REFUSED_SAID).map((r) =>
    `${r.table} ${r.chain} rule ${r.rule}${fromTemplate(templateOf(r.chain), r.text)}: the kernel refuses it (${r.reason}): ${r.text}`);
  const more = refused.length > REFUSED_SAID ? [`(and ${refused.length - REFUSED_SAID} more)`] : [];
  const rest = cut ? ['(iptables cut its list short: rules after the last may be refused too)'] : [];
  return `\nthe rules of rules.dir the kernel refuses (its reasons are in dmesg):\n${[...said, ...more, ...rest].join('\n')}`;
}

/** The 1-based payload line a restore names as failing (see restoreFailureContext), or undefined. */
export function restoreFailedLine(stderr: string): number | undefined {
  const m = /line (\d+) failed|Error occurred at line: (\d+)|line (\d+): \w+ failed/.exec(stderr);
  return m ? Number(m[1] ?? m[2] ?? m[3]) : undefined;
}

/**
 * The failing line of a restore payload with two lines either side, numbered. iptables 1.8 says which line in
 * three ways: "line 7 failed" (legacy), "Error occurred at line: 7" (a line it cannot parse), and
 * "line 7: RULE_APPEND failed (…)" (a rule the kernel refuses).
 */
export function restoreFailureContext(payload: string, stderr: string): string {
  const failing = restoreFailedLine(stderr);
  if (failing === undefined) return '';
  const lines = payload.split('\n');
  const from = Math.max(1, failing - 2);
  const to = Math.min(lines.length, failing + 2);
  const out: string[] = [];
  for (let n = from; n <= to; n++) out.push(`${n === failing ? '>' : ' '} ${String(n).padStart(4)} | ${lines[n - 1]}`);
  return out.join('\n');
}
