// node-cron's module in the bundle gets an `Intl` of its own (src/cli/cron-local-intl.ts says why: about 7 MB of
// RSS). cronLocalIntlPlugin binds it (build.mjs); cronLocalIntlProblem runs node-cron so bound, with the real
// Intl.DateTimeFormat refusing to be made, and says what went wrong, if anything. The binding alone proves little:
// node-cron asking for its formatters with other options (an `hourCycle` for `hour12`, one more field) makes the
// local Intl hand them to the real one, and the supervisor pays for ICU again without a word.
import { execFileSync } from 'node:child_process';
import process from 'node:process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath, URL } from 'node:url';
import { build } from 'esbuild';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SHIM = fileURLToPath(new URL('../src/cli/cron-local-intl.ts', import.meta.url));

/** The esbuild plugin; `edit` changes node-cron's source first (a test's stand-in for another node-cron). */
export function cronLocalIntlPlugin({ edit = (source) => source } = {}) {
  return {
    name: 'cron-local-intl',
    setup(b) {
      let bound = 0;
      b.onLoad({ filter: /[\\/]node_modules[\\/]node-cron[\\/]dist[\\/]_shared\.js$/ }, async (args) => {
        const source = edit(await readFile(args.path, 'utf8'));
        if (!source.includes('new Intl.DateTimeFormat(')) {
          return { errors: [{ text: `${args.path} no longer formats with Intl.DateTimeFormat: check whether src/cli/cron-local-intl.ts is still needed, and what node-cron reads the clock with now` }] };
        }
        bound++;
        return { contents: `import { cronIntl as Intl } from ${JSON.stringify(SHIM)};\n${source}`, loader: 'js' };
      });
      b.onEnd((result) => {
        if (bound === 0 && result.errors.length === 0) {
          result.errors.push({ text: 'node-cron was bundled without its local Intl (scripts/cron-local-intl.mjs): where does it live now?' });
        }
      });
    },
  };
}

/**
 * What node-cron does as the drift schedule uses it (a schedule without a time zone: match, next runs), bound as in
 * the bundle, run in a process (TZ with DST) whose real Intl.DateTimeFormat throws. Undefined when it ran without
 * it; else what it said.
 */
export async function cronLocalIntlProblem(options = {}) {
  const { outputFiles } = await build({
    stdin: {
      contents: "import cron from 'node-cron';\n"
        + "for (const s of ['0 30 2 * * *', '*/30 * * * * *']) { const task = cron.createTask(s, () => {}); task.match(new Date()); task.getNextRuns(3); }\n",
      resolveDir: ROOT,
      loader: 'js',
    },
    bundle: true, platform: 'node', format: 'esm', target: 'node20', write: false, logLevel: 'silent',
    plugins: [cronLocalIntlPlugin(options)],
  });
  const refuse = 'Intl.DateTimeFormat = function () { throw new Error(`node-cron made a formatter of the real Intl (ICU), '
    + 'with ${JSON.stringify([...arguments])}: src/cli/cron-local-intl.ts no longer answers what node-cron asks`); };\n';
  try {
    // The code on stdin, not as one argument (Linux caps one at 128 KiB); a node-cron that keeps the process alive
    // fails the build after 30 s rather than hanging it.
    execFileSync(process.execPath, ['--input-type=module'], {
      input: refuse + outputFiles[0].text, env: { ...process.env, TZ: 'Europe/Berlin' }, stdio: ['pipe', 'ignore', 'pipe'], timeout: options.timeoutMs ?? 30_000,
    });
    return undefined;
  } catch (error) {
    const stderr = String(error.stderr ?? '');
    const said = stderr.split('\n').find((line) => line.startsWith('Error: '))
      ?? (stderr.trim() || `running node-cron bound to its local Intl failed: ${error.message ?? error}`);
    return said.replace(/^Error: /, '');
  }
}
