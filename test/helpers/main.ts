/**
 * The CLI's main() run in-process, with what it wrote to stdout and stderr. Serial only: it takes over both
 * streams of this worker while it runs.
 */
import { main } from '../../src/cli/main.js';

export async function runMain(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const writes = { stdout: process.stdout.write.bind(process.stdout), stderr: process.stderr.write.bind(process.stderr) };
  const captured = { stdout: '', stderr: '' };
  for (const stream of ['stdout', 'stderr'] as const) {
    process[stream].write = ((chunk: string | Uint8Array) => {
      captured[stream] += String(chunk);
      return true;
    }) as typeof process.stdout.write;
  }
  try {
    return { code: await main(argv), ...captured };
  } finally {
    process.stdout.write = writes.stdout;
    process.stderr.write = writes.stderr;
    process.exitCode = undefined;
  }
}
