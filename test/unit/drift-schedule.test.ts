/**
 * The drift check's schedule (cli/drift-schedule.ts) once the supervisor stops: a reload still in flight when the
 * stop came may change the schedule afterwards, and must not schedule the check again (node-cron's timer keeps the
 * process alive: it logged "stopped" and never exited, until docker stop's SIGKILL).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

test('a schedule changed after the stop schedules nothing: the process exits by itself', async (t) => {
  const script = `
    import { DriftSchedule } from './src/cli/drift-schedule.ts';
    const supervisor = { trigger: () => console.log('triggered'), knownTablesMaxAgeMs: undefined };
    const schedule = new DriftSchedule('*/30 * * * * *', 5000, supervisor);
    schedule.start();
    schedule.stop();
    schedule.change('* * * * * *'); // a reload that was reading the config when the stop came
    console.log('changed to', schedule.schedule);
  `;
  const outcome = await new Promise<{ exited: boolean; stdout: string }>((resolve) => {
    // 20 s: a process that a live schedule holds never exits (this one fires every second); tsx's start alone took
    // most of 5 s on a machine at a load average of 10.
    const child = execFile(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { cwd: REPO, timeout: 20_000, killSignal: 'SIGKILL' }, (error, stdout) => {
      resolve({ exited: !error, stdout });
    });
    child.stdin?.end();
  });
  t.true(outcome.exited, `the process did not exit within 20 s: ${outcome.stdout}`);
  t.is(outcome.stdout, 'changed to * * * * * *\n', 'the new schedule is kept, and never fires');
});

// A reload that changes reconcile.schedule makes a new node-cron task; node-cron 4 keeps each task it made in a registry
// until the task is destroyed. Only stopped, every schedule a long-running supervisor was ever given stayed there (its
// timer state and its closure over the supervisor), one more per reload that changed the schedule.
test('a changed schedule replaces its task: node-cron holds one task however often a reload changes it, none after the stop', async (t) => {
  const { default: cron } = await import('node-cron');
  const { DriftSchedule } = await import('../../src/cli/drift-schedule.js');
  const supervisor = { trigger: () => undefined, knownTablesMaxAgeMs: undefined } as unknown as ConstructorParameters<typeof DriftSchedule>[2];
  const before = cron.getTasks().size;
  const schedule = new DriftSchedule('*/30 * * * * *', 5000, supervisor);
  schedule.start();
  for (let reload = 0; reload < 50; reload++) schedule.change(reload % 2 === 0 ? '*/10 * * * * *' : '*/30 * * * * *');
  t.is(schedule.schedule, '*/30 * * * * *');
  t.is(cron.getTasks().size - before, 1, 'the one task of the schedule in effect');
  schedule.stop();
  t.is(cron.getTasks().size - before, 0, 'none once stopped');
});

// A cron schedule is wall-clock time, and node-cron plans each run as a time of day. With the wall clock set back a
// minute (`date -s`, an NTP step on a host that does not slew), the check waited for the time of day it had planned:
// no drift check for that minute (an hour's step: an hour). Set forward, it printed one "missed execution" warning on
// stderr per run stepped over. Run in a child whose Date steps while time (performance.now(), timers) goes on.
test('the wall clock set back: the checks go on within a second or two; set forward: no burst of checks nor of warnings', async (t) => {
  const script = `
    const Real = Date;
    let offset = 0;
    globalThis.Date = class extends Real {
      constructor(...a) { if (a.length === 0) super(Real.now() + offset); else super(...a); }
      static now() { return Real.now() + offset; }
    };
    const { DriftSchedule } = await import('./src/cli/drift-schedule.ts');
    let checks = 0;
    const schedule = new DriftSchedule('* * * * * *', 5000, { trigger: () => checks++, knownTablesMaxAgeMs: undefined });
    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
    const counted = async (ms) => { const before = checks; await sleep(ms); return checks - before; };
    schedule.start();
    await sleep(1200);
    offset = -60_000;
    const back = await counted(3000);
    offset += 3_600_000;
    const forward = await counted(2000);
    schedule.stop();
    console.log(JSON.stringify({ back, forward }));
  `;
  const outcome = await new Promise<{ stdout: string; stderr: string }>((resolve) => {
    const child = execFile(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { cwd: REPO, timeout: 15_000, killSignal: 'SIGKILL' }, (_error, stdout, stderr) => {
      resolve({ stdout, stderr });
    });
    child.stdin?.end();
  });
  const { back, forward } = JSON.parse(outcome.stdout) as { back: number; forward: number };
  t.true(back >= 1, `${back} checks in the 3 s after the clock went back a minute (a check a second is scheduled)`);
  t.true(forward >= 1 && forward <= 3, `${forward} checks in the 2 s after it went forward an hour`);
  t.notRegex(outcome.stderr, /NODE-CRON|missed execution/);
});
