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
    const child = execFile(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { cwd: REPO, timeout: 5000, killSignal: 'SIGKILL' }, (error, stdout) => {
      resolve({ exited: !error, stdout });
    });
    child.stdin?.end();
  });
  t.true(outcome.exited, `the process did not exit within 5 s: ${outcome.stdout}`);
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
