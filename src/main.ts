#!/usr/bin/env node
/** The CLI from source (`tsx src/main.ts …`); the built command is dist/vlan-gateway.mjs (src/launcher.ts). */
import { hideBin } from 'yargs/helpers';
import { main } from './cli/main.js';

process.exitCode = await main(hideBin(process.argv));
