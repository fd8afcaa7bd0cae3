/** Reloads one at a time, the last write winning (src/config/reload.ts), with a scripted "file". */
import test from 'ava';
import { serialized } from '../../src/config/reload.js';

const tick = () => new Promise<void>((resolve) => setTimeout(resolve, 5));

test('a request while a round runs makes exactly one more round, after it, never beside it', async (t) => {
  let file = 'A';
  const applied: string[] = [];
  let inFlight = 0;
  let most = 0;
  const reload = serialized(async () => {
    inFlight++;
    most = Math.max(most, inFlight);
    const read = file;
    await tick(); // validation takes a while
    applied.push(read);
    inFlight--;
    return { again: false };
  });
  const first = reload();
  file = 'B'; // written while the first round validates A
  void reload();
  void reload(); // several events for the same write: still one more round
  await first;
  t.deepEqual(applied, ['A', 'B'], 'B, written last, is what runs');
  t.is(most, 1, 'never two rounds side by side');
});

test('a round that finds the file changed under it runs again until the text holds still', async (t) => {
  const writes = ['A', 'B', 'C'];
  let file = writes.shift()!;
  const applied: string[] = [];
  const reload = serialized(async () => {
    const before = file;
    applied.push(before);
    await tick();
    // A write between the read and the end of the round, with no event of its own (lost while the watches were reset).
    if (writes.length > 0) file = writes.shift()!;
    return { again: file !== before };
  });
  await reload();
  t.deepEqual(applied, ['A', 'B', 'C']);
});

test('a round that throws ends the run; the next request starts a new one', async (t) => {
  let calls = 0;
  const reload = serialized(async () => {
    calls++;
    if (calls === 1) throw new Error('boom');
    return { again: false };
  });
  await t.throwsAsync(reload(), { message: 'boom' });
  await reload();
  t.is(calls, 2);
});
