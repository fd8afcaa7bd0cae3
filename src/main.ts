#!/usr/bin/env node
/** The CLI from source (`tsx src/main.ts …`); the built command is dist/vlan-gateway.mjs (src/launcher.ts). */
import { holdSignalsWhileLoading } from './cli/signals.js';

// As the launcher does: signals held while the CLI loads (src/cli/signals.ts).
holdSignalsWhileLoading();
const { hideBin } = await import('yargs/helpers');
const { main } = await import('./cli/main.js');

process.exitCode = await main(hideBin(process.argv));
